"""What Phalanx remembers about each gang: the record the explain API and metrics read.

The scheduling thread is the only writer. The HTTP thread reads records without a lock:
each field is replaced whole (never mutated in place), so a reader sees an old or a new
value, never a torn one; `transitions` is append-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from kube.resources import ObjectRef
from scheduler.gang import Constraint, Gang, GangKey
from scheduler.preemption import InFlight
from solver.explain import PlacementExplanation
from solver.reasons import FitCode
from solver.result import Placement, Unschedulable
from topology.records import PodRecord


class GangPhase(Enum):
    """Where a gang stands; the value is how the API and metrics name it."""

    WAITING = "Waiting for members"
    GATED = "Waiting: gated"
    UNSCHEDULABLE = "Pending: unschedulable"
    PREEMPTING = "Pending: preempting"
    """Victims evicted, room held: waiting for them to terminate."""
    INVALID = "Pending: invalid"
    BINDING = "Binding"
    VOLUMES = "Binding: waiting for volumes"
    BOUND = "Bound"
    REPAIRING = "Partially bound: repairing"

    @property
    def placed(self) -> bool:
        """Placed, or being placed: its record lives as long as its pods do."""
        return self in (GangPhase.BINDING, GangPhase.VOLUMES, GangPhase.BOUND,
                        GangPhase.REPAIRING)


@dataclass(frozen=True)
class Attempt:
    """The cluster and the gang as they were when the gang was last solved: a gang that
    did not fit is solved again only when one of these moved (or the retry time passed,
    for a merely Unschedulable one)."""

    nodes: int
    """The cache's node generation."""
    freed: int
    """The cache's count of room given back (pods gone, assumptions dropped)."""
    members: tuple[object, ...]
    at: float
    """Clock.monotonic() of the attempt."""
    code: FitCode | None = None
    """Why it did not fit, when it did not."""
    volumes: int = 0
    """The cache's generation of claims, volumes and classes."""


@dataclass(frozen=True)
class VolumeWait:
    """A placed gang whose claims are being given volumes: its pods stay assumed (room
    reserved) and are bound once every claim is Bound, or forgotten at the deadline."""

    placements: tuple[tuple[PodRecord, str], ...]
    placement: Placement
    deadline: float
    """Clock.monotonic() after which the gang is given up and solved again."""


@dataclass
class GangRecord:
    key: GangKey
    ref: ObjectRef | None = None
    source: str = ""
    """The gang source that defined it."""
    phase: GangPhase = GangPhase.WAITING
    size: int = 0
    min_member: int = 0
    created: str = ""
    constraints: tuple[Constraint, ...] = ()
    error: str = ""
    result: Placement | Unschedulable | None = None
    explanation: PlacementExplanation | None = None
    remedies: tuple[str, ...] = ()
    bind_s: float = 0.0
    bound_pods: int = 0
    pending_pods: int = 0
    finished_pods: int = 0
    """Members that ran to completion (they count toward minMember)."""
    gates: dict[str, int] = field(default_factory=dict)
    """Scheduling gate -> members that carry it."""
    solved_at: float = 0.0
    attempt: Attempt | None = None
    waiting_since: float = 0.0
    reported: tuple[str, str] | None = None
    """(reason, message) of the last not-placed report: the same one is not repeated."""
    reported_at: float = -1e18
    """Clock.monotonic() of that report: another waits REPORT_INTERVAL_S."""
    told: frozenset[str] = frozenset()
    """Members already given a FailedScheduling Event for the current kind of reason."""
    status_written: tuple[object, ...] | None = None
    """The PodGroup status last written (without timestamps): unchanged is not rewritten."""
    volume_wait: VolumeWait | None = None
    gone_since: float | None = None
    """Clock.monotonic() since which none of its pods exists (a finished job)."""
    failed_nodes: dict[str, frozenset[str]] = field(default_factory=dict)
    """pod name -> nodes its bind failed on since the gang was last whole (avoided)."""
    bind_backoff_s: float = 0.0
    """The wait after the last failed binds: doubled while retries on nodes already
    refused bind none."""
    binds_retry_at: float = -1e18
    """Clock.monotonic() before which members whose binds failed are not bound again."""
    held: int = 0
    """Members not created yet whose room the gang holds."""
    waiting_for: str = ""
    """Why it waits though nothing is wrong (GangSpec.waiting), when it does."""
    preemption: InFlight | None = None
    """The preemption under way for it, or the last one (kept for explain once bound)."""
    preemption_note: str = ""
    """Why it did not preempt, when it did not fit and might have."""
    what_if_at: float = -1e18
    """Clock.monotonic() of the last what-if (the cheapest set it may not evict)."""
    transitions: list[tuple[GangPhase, float]] = field(default_factory=list)

    def move(self, phase: GangPhase, at: float) -> None:
        if phase is not self.phase or not self.transitions:
            self.phase = phase
            self.transitions.append((phase, at))

    def observe(self, gang: Gang, source: str) -> None:
        """Takes what discovery saw this cycle."""
        self.ref, self.source = gang.spec.ref, source
        self.size = max(gang.spec.size, len(gang.pending) + len(gang.gated) + gang.bound)
        self.min_member = gang.spec.min_member
        if gang.created and (not self.created or gang.created < self.created):
            self.created = gang.created
        self.constraints = gang.spec.constraints
        self.bound_pods = gang.bound
        self.pending_pods, self.finished_pods = len(gang.pending), gang.finished
        self.gates = gang.gate_names()
        self.waiting_for = gang.spec.waiting or ""
