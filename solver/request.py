"""What the solver is asked: a gang of pods, grouped into shapes, with its constraints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from solver.errors import BadRequest
from solver.reasons import Exclusion
from topology.podrules import NO_RULES, InterPod
from topology.records import SelectorTerm, Toleration

Algorithm = Literal["cpsat", "greedy"]


@dataclass(frozen=True)
class NodeRule:
    """A restriction on nodes that the shell derived from objects beyond the pod (a
    bound PersistentVolume's node affinity, the nodes a StorageClass may provision on):
    nodes must match one of `terms` (None: any node) and, with `limits`, hold at most so
    many pods of the shape (the static volumes they could bind). `reason` names the
    failure."""

    reason: Exclusion
    terms: tuple[SelectorTerm, ...] | None = None
    limits: tuple[tuple[str, int], ...] | None = None
    """(node, most pods) pairs; a node not listed takes `unlisted`."""
    unlisted: int | None = 0
    """Most pods on a node `limits` does not list (None: no limit)."""


@dataclass(frozen=True)
class PodShape:
    """Everything that decides where one pod may go and how many fit on a node. Pods of
    one template share a shape, so the solver works per shape, never per pod."""

    requests: Mapping[str, int]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: tuple[SelectorTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    name: str = "pod"
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    """The labels other pods' selectors may look at (the shape's members share them)."""
    rules: InterPod = NO_RULES
    """Required inter-pod (anti-)affinity, host ports, topology spread constraints."""
    node_rules: tuple[NodeRule, ...] = ()
    refusals: tuple[Exclusion, ...] = ()
    """Why pods of this shape cannot be placed at all (whole-pod reasons: an unbound
    immediate PersistentVolumeClaim, a missing claim, DRA claims)."""
    preferred_node_affinity: bool = False
    """It has preferred node affinity terms, which Phalanx does not score."""


@dataclass(frozen=True)
class Member:
    pod: str
    rank: int
    shape: int


@dataclass(frozen=True)
class SubGroup:
    """Members that must sit inside one domain of `level` (a slice: one child Job of a
    JobSet, one sub-group of a LeaderWorkerSet group). `exclusive`: no other sub-group
    of the gang in that domain. `level` is a topology level or kubernetes.io/hostname."""

    name: str
    level: str
    members: tuple[str, ...]
    exclusive: bool = False


@dataclass(frozen=True)
class GangRequest:
    name: str
    shapes: tuple[PodShape, ...]
    members: tuple[Member, ...]
    min_member: int
    required_level: str | None = None
    preferred_level: str | None = None
    subgroups: tuple[SubGroup, ...] = ()
    """Slices; when there are any, every member belongs to exactly one, they share one
    level and one exclusivity, and the gang is placed whole."""
    slice_balance: bool = False
    """Every used domain of the slice level holds as many slices (+-1), where that costs
    no domain at any level (`solver.slices.balance`)."""

    def validate(self, levels: tuple[str, ...]) -> None:
        if not self.members:
            raise BadRequest("members", "at least one pod", 0)
        if not self.shapes:
            raise BadRequest("shapes", "at least one pod shape", 0)
        if not 1 <= self.min_member <= len(self.members):
            raise BadRequest("minMember", f"1..{len(self.members)} (the gang's size)",
                             self.min_member)
        for member in self.members:
            if not 0 <= member.shape < len(self.shapes):
                raise BadRequest(f"members[{member.pod}].shape",
                                 f"0..{len(self.shapes) - 1}", member.shape)
        if len({member.pod for member in self.members}) != len(self.members):
            raise BadRequest("members", "distinct pod names", "duplicates")
        for index, shape in enumerate(self.shapes):
            for resource, amount in shape.requests.items():
                if amount < 0:
                    raise BadRequest(f"shapes[{index}].requests.{resource}", ">= 0", amount)
        for name, level in (("required_level", self.required_level),
                            ("preferred_level", self.preferred_level)):
            if level is not None and level not in levels:
                raise BadRequest(name, f"one of the topology levels {list(levels)}", level)
        if self.subgroups:
            self._validate_subgroups()

    def _validate_subgroups(self) -> None:
        names = {member.pod for member in self.members}
        seen: dict[str, str] = {}
        for group in self.subgroups:
            if not group.members:
                raise BadRequest(f"subgroups[{group.name}].members", "at least one pod", 0)
            for pod in group.members:
                if pod not in names:
                    raise BadRequest(f"subgroups[{group.name}].members", "pods of the gang",
                                     pod)
                if pod in seen:
                    raise BadRequest(f"subgroups[{group.name}].members",
                                     "pods in no other sub-group", f"{pod} (also in "
                                     f"{seen[pod]})")
                seen[pod] = group.name
        outside = sorted(names - set(seen))
        if outside:
            raise BadRequest("subgroups", "every member in a sub-group",
                             f"{len(outside)} outside any, e.g. {outside[0]}")
        first = self.subgroups[0]
        for group in self.subgroups[1:]:
            if (group.level, group.exclusive) != (first.level, first.exclusive):
                raise BadRequest(f"subgroups[{group.name}]",
                                 f"level {first.level} and exclusive={first.exclusive}, as "
                                 f"every sub-group of the gang",
                                 f"level {group.level}, exclusive={group.exclusive}")

    def ordered_members(self) -> tuple[Member, ...]:
        return tuple(sorted(self.members, key=lambda m: (m.rank, m.pod)))


@dataclass(frozen=True)
class SolverConfig:
    algorithm: Algorithm = "cpsat"
    time_limit_s: float = 1.0
    workers: int = 1
    seed: int = 0
    greedy_fallback: bool = True
    """On a CP-SAT timeout without any solution, answer with greedy's placement."""
