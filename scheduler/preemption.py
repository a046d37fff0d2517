"""Preemption in the shell: who may be a victim, the protocol, and the room kept.

The choice itself is pure (`solver.preempt.choose_victims`); this module says what goes
in and carries it out, as kube-scheduler's DefaultPreemption does:

- **Candidates**: running pods (any scheduler's) of strictly lower priority, grouped by
  the gang sources into whole gangs (a victim gang goes whole: evicting part of a
  training job kills it anyway); the rest are single pods. Never candidates: terminating
  pods, DaemonSet pods (recreated on the same node at once: evicting them frees nothing),
  mirror pods, gangs with any member at or above the preemptor's priority, and units a
  PodDisruptionBudget protects (more of their pods matched than its
  `status.disruptionsAllowed`; one whose eviction the API refused with 429 is kept out
  for PROTECT_S).
- **Protocol**: each victim pod is evicted through the Eviction API (graceful
  termination and PDBs honoured by the API server); the preemptor's pods get
  `status.nominatedNodeName` (visible, and kept by a new leader); the room the placement
  chose is held in the cache for the gang (no other gang or single pod takes it) until
  the victims are gone and the gang is bound, or PREEMPT_TIMEOUT_S passed (then the room
  is released and the gang may preempt again).
- **No thrash**: strict priority (equal never preempts, so the victims' recreated pods
  cannot take the room back); one preemption in flight per gang; a gang that would not
  fit even with every candidate gone preempts nothing and says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.gang import Gang, GangKey
from solver.preempt import Candidate, VictimSet
from topology.records import PodRecord, RecordError
from topology.selectors import LabelSelector, parse_label_selector

PREEMPT_TIMEOUT_S = 180.0
"""Victims must be gone (graceful termination included) and the gang bound within this;
past it the held room is released."""
PROTECT_S = 60.0
"""A unit whose eviction a PodDisruptionBudget refused is not chosen again for this long."""
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class InFlight:
    """A preemption under way: victims evicted, room held, the gang not yet bound."""

    chosen: VictimSet
    runner_up: VictimSet | None
    status: str
    victims: frozenset[tuple[str, str]]
    """(key, uid) of the victim pods evicted: the gang waits until none of them exists
    (a StatefulSet recreates a namesake at once; it is not a victim still leaving)."""
    refused: tuple[str, ...]
    """Victim pods whose eviction was refused (by a PDB), named."""
    deadline: float
    """Clock.monotonic() past which the held room is released."""
    solve_s: float
    at: float
    """Clock.time() when it started."""


@dataclass(frozen=True)
class Budget:
    """A PodDisruptionBudget as preemption reads it."""

    name: str
    namespace: str
    selector: LabelSelector | None
    allowed: int

    def covers(self, pod: PodRecord) -> bool:
        return (pod.namespace == self.namespace and self.selector is not None
                and self.selector.matches(pod.labels))


def budgets_from(objects: Iterable[Mapping[str, Any]]) -> list[Budget]:
    """Readable PDBs; one with a malformed selector protects nothing it cannot match
    (the API server validates selectors, so this is a corrupt object)."""
    out = []
    for raw in objects:
        meta = raw.get("metadata") or {}
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            selector = parse_label_selector(f"PodDisruptionBudget {name}", "spec.selector",
                                            (raw.get("spec") or {}).get("selector"))
        except RecordError:
            continue
        allowed = (raw.get("status") or {}).get("disruptionsAllowed", 0)
        out.append(Budget(str(meta.get("name")), str(meta.get("namespace")), selector,
                          allowed if isinstance(allowed, int) else 0))
    return out


def may_preempt(gang: Gang) -> bool:
    """`preemptionPolicy: Never` on any member: the gang waits instead."""
    return all(p.preemption_policy != "Never" for p in gang.pending)


def _evictable(pod: PodRecord) -> bool:
    return (pod.consumes_capacity and not pod.deleting
            and (pod.owner is None or pod.owner.kind != "DaemonSet")
            and MIRROR_ANNOTATION not in pod.annotations)


def candidates(pods: Iterable[PodRecord], gang_of: Mapping[str, GangKey], below: int,
               own: GangKey, budgets: Sequence[Budget], protected: Mapping[str, float],
               now: float) -> tuple[list[Candidate], list[str]]:
    """The units that may be evicted for a gang of priority `below`, and why others that
    would have been are not (PDBs, recent refusals)."""
    units: dict[str, list[PodRecord]] = defaultdict(list)
    gangs: dict[str, GangKey] = {}
    for pod in pods:
        if not pod.consumes_capacity:
            continue
        key = gang_of.get(pod.key)
        if key == own:
            continue
        name = f"Gang {key}" if key is not None else f"Pod {pod.key}"
        if key is not None:
            gangs[name] = key
        units[name].append(pod)
    out: list[Candidate] = []
    notes: list[str] = []
    for name, members in units.items():
        priority = max(p.priority for p in members)
        if priority >= below:
            continue
        members = [p for p in members if _evictable(p)]  # a gang's terminating ones go anyway
        if not members:
            continue
        if protected.get(name, -1e18) > now:
            notes.append(f"{name}: its eviction was refused by a PodDisruptionBudget "
                         f"recently")
            continue
        blocking = _blocking_budget(members, budgets)
        if blocking is not None:
            notes.append(f"{name}: protected by PodDisruptionBudget {blocking}")
            continue
        out.append(Candidate(name, priority, tuple(sorted(members, key=lambda p: p.key)),
                             gang=name in gangs))
    out.sort(key=lambda c: c.name)
    return out, notes


def _blocking_budget(members: Sequence[PodRecord], budgets: Sequence[Budget]) -> str | None:
    for budget in budgets:
        covered = sum(1 for p in members if budget.covers(p))
        if covered and covered > budget.allowed:
            return (f"{budget.namespace}/{budget.name} ({covered} pod(s) matched, "
                    f"{budget.allowed} disruption(s) allowed)")
    return None


def describe(chosen: VictimSet, limit: int = 5) -> str:
    names = [c.name for c in chosen.victims]
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                        if len(names) > limit else "")
    return f"{shown} ({chosen.cost.render()})"
