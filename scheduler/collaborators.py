"""What the scheduling cycle needs from the world, as small interfaces passed in.

The cycle (`scheduler.cycle`) decides; these do: bind pods, write Events and status,
tell the time, say whether this instance may bind. `phalanx run` wires the real ones
(`scheduler.app`); unit tests pass in-memory ones, so every decision of the cycle is
testable without an API server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kube import transient
from kube.resources import ObjectRef
from scheduler.volumes import VolumeAction

NOT_LEADER = -1
"""BindResult.status of a bind not sent because this instance stopped leading."""


@dataclass(frozen=True)
class BindResult:
    pod: str
    """namespace/name"""
    node: str
    ok: bool
    status: int
    reason: str = ""
    bound_to: str = ""
    """Refused with 409 because the API server already has the pod on this other node
    (a bind an earlier cycle or leader sent landed after its answer was lost)."""

    @property
    def unsent(self) -> bool:
        """Not sent at all: this instance stopped leading (nothing to report)."""
        return self.status == NOT_LEADER

    @property
    def node_specific(self) -> bool:
        """Refused for this node (admission, conflict): try another next time. Timeouts,
        429 and 5xx say nothing about the node."""
        return not self.ok and not self.unsent and not transient(self.status)


class Binder(Protocol):
    def bind_all(self, placements: Sequence[tuple[str, str]]
                 ) -> tuple[list[BindResult], float]:
        """Binds every (pod key, node) concurrently; results in order, and seconds."""
        ...


@dataclass(frozen=True)
class EvictResult:
    pod: str
    """namespace/name"""
    ok: bool
    """Evicted, or gone already (404)."""
    status: int
    reason: str = ""

    @property
    def budget(self) -> bool:
        """Refused because a PodDisruptionBudget allows no more disruptions (429)."""
        return self.status == 429


class Evictor(Protocol):
    def evict(self, pods: Sequence[str]) -> list[EvictResult]:
        """Evicts each pod (namespace/name) through the Eviction API, concurrently."""
        ...

    def nominate(self, placements: Sequence[tuple[str, str]]) -> list[str]:
        """Sets status.nominatedNodeName of each (pod key, node); the errors."""
        ...


class VolumeWriter(Protocol):
    def apply(self, actions: Sequence[VolumeAction]) -> list[str]:
        """Writes each claim's volume choice; the errors, one line each."""
        ...


class Recorder(Protocol):
    def event(self, ref: ObjectRef, reason: str, message: str, warning: bool = False) -> None:
        ...

    def pod_group_status(self, ref: ObjectRef, status: dict[str, Any]) -> None:
        """Merge-patches the status of the PodGroup `ref` names, in order."""
        ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class Leadership(Protocol):
    def leading(self) -> bool:
        """May this instance bind now? Checked before every bind."""
        ...


class Leading:
    """Leadership from a check (the Lease elector's, or always), that can be revoked for
    good: on shutdown no new bind may start."""

    def __init__(self, check: Callable[[], bool] = lambda: True) -> None:
        self.check = check
        self.revoked = False

    def leading(self) -> bool:
        return not self.revoked and self.check()

    def revoke(self) -> None:
        self.revoked = True
