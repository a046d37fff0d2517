"""A gang as the shell sees it: its identity, what its source read, and its members now.

`GangKey` is the one identity of a gang everywhere (discovery, records, events, the
explain API): the kind of object that defines it, its namespace and its name. A Job
`train` and a StatefulSet `train` in one namespace are two gangs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import NamedTuple

from kube.resources import ObjectRef
from topology.records import PodRecord

GANG_KIND_PATTERN = r"^[A-Z][A-Za-z0-9]*(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GANG_NAME = re.compile(r"^(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/"
                       r"((?P<kind>" + GANG_KIND_PATTERN.strip("^$") + r")/)?"
                       r"(?P<name>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")
"""A gang as users name it on the command line: NAMESPACE/NAME or NAMESPACE/KIND/NAME."""
"""A gang's kind: an object kind (StatefulSet), or one qualified by its API group where
several APIs name a kind alike (PodGroup.scheduling.k8s.io, PodGroup.kueue.x-k8s.io)."""


class GangKey(NamedTuple):
    """A gang's identity. A tuple (hashed and compared in C): discovery files every bound
    member of every gang under its key on each cycle, hundreds of thousands at scale."""

    kind: str
    """What defines the gang: PodGroup, StatefulSet, Job, ..."""
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"


class ConstraintKind(Enum):
    REQUIRED = "required"
    PREFERRED = "preferred"
    SLICE_REQUIRED = "slice-required"
    """Each slice (block of `slice-size` consecutive ranks) inside one domain of a level."""
    SLICE_SIZE = "slice-size"
    """Its `level` holds the size as read (a positive integer when valid)."""
    SLICE_BALANCE = "slice-balance"
    """`even`: every used slice domain the same number of slices (+-1)."""


@dataclass(frozen=True)
class Constraint:
    """A topology constraint the gang asked for (a level, or a slice size or balance as
    read), and where that was read."""

    kind: ConstraintKind
    level: str
    key: str
    """The annotation it was read from."""
    source: str
    """The kind of object carrying that annotation: the gang's object, or Pod."""


@dataclass(frozen=True)
class SubGroupSpec:
    """Members that must sit inside one domain of `level` (a slice): one child Job of a
    JobSet, one rank block of a StatefulSet. `exclusive`: no other sub-group of the gang
    in that domain. `size`: the members it is to have (they may not all exist yet)."""

    level: str
    size: int
    exclusive: bool = False


@dataclass(frozen=True)
class Planned:
    """A member the gang's controller has not created yet, as it will look (built from
    the workload's template): planned with the gang, its room held until it arrives."""

    pod: PodRecord
    rank: int | None
    subgroup: str | None = None


@dataclass(frozen=True)
class GangSpec:
    """What a gang source read from the gang's objects: size, minMember, constraints and
    the object to report to. `error` names the bad field when the spec cannot be used;
    such a gang is reported and never placed."""

    ref: ObjectRef
    min_member: int
    size: int
    """Members the gang's object asks for (replicas, parallelism, PodGroup members)."""
    constraints: tuple[Constraint, ...] = ()
    timeout_s: float | None = None
    error: str | None = None
    version: str = ""
    """metadata.generation of the object read: moves when its spec changes, not when
    Phalanx writes its status."""
    subgroups: Mapping[str, SubGroupSpec] = field(default_factory=dict)
    """Sub-group name -> what it must keep (slices the source defines)."""
    waiting: str | None = None
    """Why the gang may not be placed yet, nothing being wrong with it: its workload
    object is not found (being deleted, its pods not yet; or not seen yet)."""
    size_seen: bool = False
    """Nothing declares the size: it is the members seen (a Volcano group where that API
    is not served), so the group may still be growing (cycle.SETTLE_S)."""
    later: tuple[Planned, ...] = ()
    """Members the controller creates only after the first ones are bound or running
    (JobSet's exclusive placement and InOrder startup, LeaderWorkerSet's workers):
    minMember counts the members that come first; these are planned with them and
    their room held until they arrive."""

    def level(self, kind: ConstraintKind) -> str | None:
        return next((c.level for c in self.constraints if c.kind is kind), None)


@dataclass(frozen=True)
class Gang:
    """One gang at the start of a cycle: its spec and its members in the cache."""

    key: GangKey
    spec: GangSpec
    pending: tuple[PodRecord, ...]
    """Members waiting to be placed (unbound, not assumed, not gated), rank order."""
    gated: tuple[PodRecord, ...]
    """Members that still carry scheduling gates: not placeable until ungated."""
    bound: int
    """Members bound in the API server, or assumed by us (bind sent, not yet seen)."""
    finished: int = 0
    """Members that ran to completion (Succeeded): they count toward minMember and are
    never placed again. A Job's pods can finish while others of its gang still wait (the
    soak, issue 20: a JobSet's 44 bound pods completed while 20 were refused their binds,
    and the 20 then waited for 64 members that would never all be pending again)."""
    peers: tuple[tuple[int, str], ...] = ()
    """(rank, node) of those bound members: replacements go next to them."""
    ranks: tuple[int | None, ...] = ()
    """Rank of each pending member (None: the source gives it none)."""
    subgroup_of: tuple[str | None, ...] = ()
    """Sub-group of each pending member (None: none)."""
    peer_groups: tuple[str | None, ...] = ()
    """Sub-group of each bound member, as `peers` lists them."""

    @property
    def needed(self) -> int:
        """Pending members required before placement may start."""
        return max(1, self.spec.min_member - self.bound - self.finished)

    @property
    def ready(self) -> bool:
        return (self.spec.error is None and self.spec.waiting is None
                and len(self.pending) >= self.needed)

    @property
    def priority(self) -> int:
        return max((p.priority for p in (*self.pending, *self.gated)), default=0)

    @property
    def created(self) -> str:
        return min((p.created for p in (*self.pending, *self.gated)), default="")

    @property
    def members_version(self) -> tuple[object, ...]:
        """Changes whenever a member or the spec does: a gang that could not be placed
        is worth another try when this moves, whatever else stayed the same."""
        return (self.spec.version, self.bound,
                tuple(sorted((p.key, p.resource_version) for p in self.pending)))

    def gate_names(self) -> dict[str, int]:
        """Scheduling gate -> members carrying it."""
        counts: dict[str, int] = {}
        for pod in self.gated:
            for gate in pod.scheduling_gates:
                counts[gate] = counts.get(gate, 0) + 1
        return counts


def creation_epoch(stamp: str) -> float | None:
    """An RFC 3339 creationTimestamp ("2026-12-04T20:44:10Z") in seconds since the epoch;
    None when absent or unreadable. The one parser of the API server's timestamps."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
