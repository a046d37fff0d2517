"""Response models of the explain API: what may leave the server, and nothing else.

Built from the gang records, the solver's Placement/Diagnosis and the explanation; never
from raw pod specs, so no env, command, secret or volume can leak through a route.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from scheduler.gang import GANG_KIND_PATTERN

NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
KIND_PATTERN = GANG_KIND_PATTERN


class Problem(BaseModel):
    detail: str


class Candidate(BaseModel):
    kind: str
    name: str


class Ambiguous(BaseModel):
    detail: str
    candidates: list[Candidate] = Field(description="gangs of that name in the namespace: "
                                                    "choose one with ?kind=")


class GroupSummary(BaseModel):
    namespace: str
    name: str
    kind: str = Field(description="what defines the gang: PodGroup, StatefulSet, Job, ...")
    source: str = Field("", description="the gang source that grouped its pods")
    state: str = Field(description="Waiting for members, Waiting: gated, Pending: "
                                   "unschedulable, Pending: invalid, Binding, Bound, "
                                   "Partially bound: repairing")
    size: int
    min_member: int
    bound: int
    created: str = Field(description="creationTimestamp of the oldest member")
    age_s: float | None


class GroupList(BaseModel):
    groups: list[GroupSummary]


class PodPlacement(BaseModel):
    pod: str
    rank: int
    node: str
    domain: str
    bound: bool = Field(description="the API server (through the watch) shows the pod on "
                                    "this node")


class PlacementMetrics(BaseModel):
    domains_used: dict[str, int]
    lower_bound: dict[str, int | None]
    ring_hops: int
    max_distance: int


class SolverStage(BaseModel):
    objective: str
    value: int
    status: str


class SolverSummary(BaseModel):
    algorithm: str
    status: str
    solve_s: float
    stages: list[SolverStage] = []
    note: str = ""


class ConstraintRead(BaseModel):
    kind: str = Field(description="required or preferred")
    level: str
    annotation: str
    source: str = Field(description="the object carrying the annotation: PodGroup, "
                                    "StatefulSet/Job, or Pod")


class Transition(BaseModel):
    state: str
    at: str


class GroupDetail(GroupSummary):
    pods: list[PodPlacement]
    unplaced: list[str]
    metrics: PlacementMetrics | None
    solver: SolverSummary | None
    solve_s: float | None
    bind_s: float | None
    reason: str = Field(description="why it is pending, when it is")
    constraints: list[ConstraintRead]
    gates: dict[str, int] = Field(default_factory=dict,
                                  description="scheduling gate -> members carrying it")
    transitions: list[Transition]


class LevelDemand(BaseModel):
    level: str
    demand: int
    best_domain: str
    best_fits: int


class Exclusion(BaseModel):
    reason: str
    nodes: int


class DomainRoomOut(BaseModel):
    domain: str
    fits: int
    placed: int
    leftover: int


class LevelChoiceOut(BaseModel):
    level: str
    used: int
    lower_bound: int | None
    why: str
    chosen: list[DomainRoomOut]
    runners_up: list[DomainRoomOut]


class SliceOut(BaseModel):
    name: str
    level: str
    domain: str
    pods: int


class VictimSetOut(BaseModel):
    victims: list[str] = Field(description="Gang ns/Kind/name or Pod ns/name, each whole")
    highest_priority: int
    count: int
    accelerators: int
    pods: int


class PreemptionOut(BaseModel):
    started: str
    status: str = Field(description="OPTIMAL when every term of the victims' cost was "
                                    "proven minimal, else FEASIBLE")
    solve_s: float
    chosen: VictimSetOut
    runner_up: VictimSetOut | None = None
    refused: list[str] = Field(default_factory=list,
                               description="victim pods whose eviction was refused (a PDB)")


class Explanation(BaseModel):
    namespace: str
    name: str
    kind: str
    state: str
    verdict: str = Field(description="placed, pending, preempting, waiting, invalid, "
                                     "binding or repairing")
    summary: str
    code: str = Field("", description="Unschedulable (may fit later) or "
                                      "UnschedulableAndUnresolvable (never as asked)")
    shape: str = ""
    demand: int = 0
    cluster_fits: int | None = None
    total_nodes: int | None = None
    levels_demand: list[LevelDemand] = []
    excluded: list[Exclusion] = []
    remedies: list[str] = []
    levels: list[LevelChoiceOut] = []
    slices: list[SliceOut] = Field(default_factory=list,
                                   description="per slice, the domain of its level it sits in")
    preemption: PreemptionOut | None = Field(None, description="the victims evicted for this "
                                                               "gang, when it preempted")
    warnings: list[str] = []


class DomainFree(BaseModel):
    domain: str
    nodes: int
    free: dict[str, str] = Field(description="free capacity per resource, as quantities")


class LevelDomains(BaseModel):
    level: str
    domains: list[DomainFree]
    total_domains: int
    truncated: bool


class Topology(BaseModel):
    levels: list[LevelDomains]
    nodes: int
    unlabelled_nodes: int


class Readiness(BaseModel):
    ready: bool
    caches_synced: bool
    leader: bool
