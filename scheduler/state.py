"""What Phalanx remembers about each gang: the record the explain API and metrics read.

The scheduling thread is the only writer. The HTTP thread reads records without a lock:
each field is replaced whole (never mutated in place), so a reader sees an old or a new
value, never a torn one; `transitions` is append-only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from scheduler.events import ObjectRef
from scheduler.gangs import KUEUE_PREFERRED, KUEUE_REQUIRED, PREFERRED, REQUIRED
from solver.explain import PlacementExplanation
from solver.result import Placement, Unschedulable

WAITING = "Waiting for members"
UNSCHEDULABLE = "Pending: unschedulable"
INVALID = "Pending: invalid"
BINDING = "Binding"
BOUND = "Bound"
REPAIRING = "Partially bound: repairing"
STATES = (WAITING, UNSCHEDULABLE, INVALID, BINDING, BOUND, REPAIRING)


@dataclass(frozen=True)
class Constraint:
    kind: str
    """"required" or "preferred"."""
    level: str
    key: str
    """The annotation it was read from."""
    source: str
    """Where that annotation sits: the PodGroup, or the pods (their template)."""


def read_constraints(pod_annotations: dict[str, str],
                     group_annotations: dict[str, str], group_kind: str) -> tuple[Constraint, ...]:
    """The topology constraints in force and where each came from, with the precedence
    `gang_from_pods` applies: the group's annotations over the pods', ours over Kueue's."""
    merged = {**pod_annotations, **group_annotations}
    out = []
    for kind, keys in (("required", (REQUIRED, KUEUE_REQUIRED)),
                       ("preferred", (PREFERRED, KUEUE_PREFERRED))):
        key = next((k for k in keys if merged.get(k)), None)
        if key is not None:
            source = group_kind if key in group_annotations else "Pod"
            out.append(Constraint(kind, merged[key], key, source))
    return tuple(out)


@dataclass
class GangState:
    key: str
    ref: ObjectRef | None = None
    state: str = WAITING
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
    solved_at: float = 0.0
    capacity_version: int = -1
    attempted_at: float = 0.0
    waiting_since: float = 0.0
    reported: str = ""
    failed_nodes: dict[str, frozenset[str]] = field(default_factory=dict)
    """pod name -> nodes its bind failed on since the gang was last whole (avoided)."""
    transitions: list[tuple[str, float]] = field(default_factory=list)

    def move(self, state: str) -> None:
        if state != self.state or not self.transitions:
            self.state = state
            self.transitions.append((state, time.time()))
