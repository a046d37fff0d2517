"""The one place a gang decision becomes visible: Events, PodGroup status, the log line.

A decision is first described as an `Outcome` (pure: `placed`, `not_placed`,
`timed_out`), then `Reporter.report` writes it. What a waiting gang may cost the API
server is bounded:
- a not-placed outcome is written once per distinct message, and at most once per
  REPORT_INTERVAL_S per gang; a newer message within the interval is kept and written
  when it has passed (`flush`);
- each member pod gets one FailedScheduling Event when its gang first cannot be placed,
  and again only when the kind of reason changes; the gang's object carries every
  update after that;
- a PodGroup status is written only when it differs from the last one written;
- the recorder folds repeated Events of one object and reason into one Event's count.
Per-pod `Scheduled` Events, as `kubectl describe pod` users expect, come from here too,
after the binds, off their path (the recorder writes asynchronously).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kube.resources import NATIVE_POD_GROUPS, POD_GROUPS, ObjectRef
from scheduler.collaborators import BindResult, Clock, Recorder
from scheduler.gang import Gang, GangKey
from scheduler.state import GangRecord
from solver.result import Placement
from topology.records import PodRecord

log = logging.getLogger("phalanx.scheduler")
REPORT_INTERVAL_S = 30.0


class EventReason(Enum):
    SCHEDULED = "Scheduled"
    PARTIALLY_BOUND = "PartiallyBound"
    FAILED_SCHEDULING = "FailedScheduling"
    INVALID_GANG = "InvalidGang"
    SCHEDULE_TIMEOUT = "ScheduleTimeout"
    PREEMPTING = "Preempting"
    PREEMPTED = "Preempted"


PLACED = frozenset({EventReason.SCHEDULED, EventReason.PARTIALLY_BOUND})
NORMAL = frozenset({EventReason.SCHEDULED, EventReason.PREEMPTED})
"""Pod Events of these reasons are Normal, the others Warnings."""


@dataclass(frozen=True)
class Outcome:
    reason: EventReason
    message: str
    warning: bool
    pod_events: tuple[tuple[PodRecord, EventReason, str], ...] = ()
    """Events on member pods, written after the gang's own."""
    pod_group: dict[str, Any] | None = None
    """Status for a PodGroup-defined gang (phase, scheduled, the Scheduled condition)."""
    once: bool = False
    """Written only when it differs from the last not-placed report."""
    decision: str = field(default="")
    """One word for the log line: placed, repairing, unschedulable, invalid, ..."""


def _status_signature(status: dict[str, Any]) -> tuple[object, ...]:
    conditions = tuple((c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                       for c in status.get("conditions") or ())
    return (status.get("phase"), status.get("scheduled"), conditions)


def _scheduled(signature: tuple[object, ...]) -> bool:
    conditions = signature[2]
    return isinstance(conditions, tuple) and any(c[1] == "True" for c in conditions)


def pod_group_status(ref: ObjectRef, status: dict[str, Any],
                     generation: str = "") -> dict[str, Any] | None:
    """The status to write for a gang's PodGroup, in its API's terms: scheduler-plugins'
    phase, scheduled count and Scheduled condition; Kubernetes' own PodGroupScheduled
    condition, as kube-scheduler writes it (True/Scheduled, False/Unschedulable, with
    the group's generation). None for other gangs (Volcano's PodGroup status belongs to
    Volcano's controller; workloads have none)."""
    if ref.kind != "PodGroup":
        return None
    if ref.api_version == POD_GROUPS.api_version:
        return status
    if ref.api_version != NATIVE_POD_GROUPS.api_version:
        return None
    ours = (status.get("conditions") or [{}])[0]
    ok = ours.get("status") == "True"
    condition = {"type": "PodGroupScheduled", "status": "True" if ok else "False",
                 "reason": "Scheduled" if ok else "Unschedulable",
                 "message": ours.get("message", ""),
                 "lastTransitionTime": ours.get("lastTransitionTime")}
    if generation.isdigit():
        condition["observedGeneration"] = int(generation)
    return {"conditions": [condition]}


def pod_ref(pod: PodRecord) -> ObjectRef:
    return ObjectRef("Pod", pod.namespace, pod.name, pod.uid)


def condition(ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": "Scheduled", "status": "True" if ok else "False", "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def placed(gang: Gang, placement: Placement, results: Sequence[BindResult],
           bind_s: float, held: int = 0) -> Outcome:
    """Binds done: Scheduled (or PartiallyBound, with the failures named)."""
    by_key = {p.key: p for p in gang.pending}
    failed = [r for r in results if not r.ok]
    bound = len(results) - len(failed)
    m = placement.metrics
    what = (f"replaced {bound}/{len(results)} member(s) next to {len(gang.peers)} running "
            f"peer(s)" if placement.solver.algorithm == "nearby" else
            f"placed {bound}/{len(results)} pods")
    message = (f"{what} in {placement.solver.solve_s:.3f}s ({placement.solver.algorithm} "
               f"{placement.solver.status}); domains used {m.domains_used}; lower bound "
               f"{m.lower_bound}; ring hops {m.ring_hops}; bound in {bind_s:.3f}s")
    if held:
        message += (f"; room held for {held} member(s) its controller creates once these "
                    f"are bound")
    if failed:
        message += (f"; {len(failed)} bind(s) failed ("
                    + ", ".join(sorted({f"{r.status} {r.reason}"[:80] for r in failed}))
                    + "): repairing next to the bound members")
    pod_events = tuple(
        (by_key[r.pod], EventReason.SCHEDULED, f"Successfully assigned {r.pod} to {r.node}")
        if r.ok else
        (by_key[r.pod], EventReason.FAILED_SCHEDULING,
         f"binding to {r.node} failed: {r.status} {r.reason}; it will be placed next to "
         f"its bound peers")
        for r in results)
    status = {"phase": "Scheduled" if not failed else "Scheduling",
              "scheduled": gang.bound + bound,
              "conditions": [condition(not failed, "Placed", message)]}
    return Outcome(EventReason.PARTIALLY_BOUND if failed else EventReason.SCHEDULED,
                   message, bool(failed), pod_events, status,
                   decision="repairing" if failed else "placed")


def not_placed(gang: Gang, reason: EventReason, code: str, message: str,
               decision: str) -> Outcome:
    """Unschedulable or invalid: the gang, each pending member and the PodGroup say why."""
    pod_events = tuple((pod, EventReason.FAILED_SCHEDULING, message) for pod in gang.pending)
    status = {"phase": "Pending", "scheduled": gang.bound,
              "conditions": [condition(False, code, message)]}
    return Outcome(reason, message, True, pod_events, status, once=True, decision=decision)


def preempting(gang: Gang, message: str, victims: Sequence[PodRecord],
               victim_message: str) -> Outcome:
    """Victims evicted for the gang: the gang (and its PodGroup) say so, each victim pod
    says by whom and why."""
    pod_events = tuple((pod, EventReason.PREEMPTED, victim_message) for pod in victims)
    status = {"phase": "Pending", "scheduled": gang.bound,
              "conditions": [condition(False, EventReason.PREEMPTING.value, message)]}
    return Outcome(EventReason.PREEMPTING, message, False, pod_events, status,
                   decision="preempting")


def timed_out(gang: Gang, phase: str) -> Outcome:
    message = (f"gang {gang.key} not placed within scheduleTimeoutSeconds="
               f"{gang.spec.timeout_s:g} ({phase}); still queued")
    return Outcome(EventReason.SCHEDULE_TIMEOUT, message, True, decision="timeout")


class Reporter:
    def __init__(self, recorder: Recorder, clock: Clock) -> None:
        self.recorder, self.clock = recorder, clock
        self.single_reports: dict[str, str] = {}
        """pod key -> last FailedScheduling message written for it (per-pod path)."""
        self.deferred: dict[GangKey, tuple[Gang, Outcome]] = {}
        """Per gang, the newest not-placed report the interval held back."""

    def report(self, gang: Gang, record: GangRecord | None, outcome: Outcome) -> None:
        pod_events = outcome.pod_events
        if outcome.once and record is not None:
            if record.reported == (outcome.reason.value, outcome.message):
                self.deferred.pop(record.key, None)
                return
            now = self.clock.monotonic()
            if now - record.reported_at < REPORT_INTERVAL_S:
                self.deferred[record.key] = (gang, outcome)
                return
            if record.reported is None or record.reported[0] != outcome.reason.value:
                record.told = frozenset()  # a new kind of reason: the pods hear it too
            pod_events = tuple(e for e in pod_events if e[0].key not in record.told)
            record.told = record.told | {e[0].key for e in pod_events}
            record.reported = (outcome.reason.value, outcome.message)
            record.reported_at = now
            self.deferred.pop(record.key, None)
        elif record is not None and outcome.reason in PLACED:
            record.reported, record.told = None, frozenset()
            record.reported_at = -1e18  # placed: a later failure is news again
            self.deferred.pop(record.key, None)
        ref = gang.spec.ref
        self.recorder.event(ref, outcome.reason.value, outcome.message, outcome.warning)
        for pod, reason, message in pod_events:
            self.recorder.event(pod_ref(pod), reason.value, message,
                                reason not in NORMAL)
        status = (pod_group_status(ref, outcome.pod_group, gang.spec.version)
                  if outcome.pod_group else None)
        if status is not None:
            self._status(ref, record, status)
        log.info("gang=%s decision=%s reason=%s message=%r", gang.key, outcome.decision,
                 outcome.reason.value, outcome.message)

    def flush(self, record: GangRecord) -> None:
        """Writes a report held back by the interval, once the interval has passed."""
        held = self.deferred.get(record.key)
        if held is not None and self.clock.monotonic() - record.reported_at >= REPORT_INTERVAL_S:
            self.report(held[0], record, held[1])

    def _status(self, ref: ObjectRef, record: GangRecord | None,
                status: dict[str, Any]) -> None:
        """Only a status that differs (timestamps aside) from the last one written, and,
        as kube-scheduler, never a native PodGroup's PodGroupScheduled back to False
        once it was True (more pods of a scheduled group are not a failed group)."""
        signature = _status_signature(status)
        if record is not None:
            if record.status_written == signature:
                return
            if (ref.api_version == NATIVE_POD_GROUPS.api_version and record.status_written
                    and _scheduled(record.status_written) and not _scheduled(signature)):
                return
            record.status_written = signature
        self.recorder.pod_group_status(ref, status)

    def preempted(self, victims: Sequence[PodRecord], message: str) -> None:
        """A Preempted Event on each victim pod (the per-pod path's preemptions)."""
        for pod in victims:
            self.recorder.event(pod_ref(pod), EventReason.PREEMPTED.value, message)

    def pod_placed(self, pod: PodRecord, node: str) -> None:
        self.single_reports.pop(pod.key, None)
        self.recorder.event(pod_ref(pod), EventReason.SCHEDULED.value,
                            f"Successfully assigned {pod.key} to {node}")
        log.debug("pod=%s decision=placed node=%s", pod.key, node)

    def pod_not_placed(self, pod: PodRecord, message: str) -> None:
        """Once per distinct message, as for gangs."""
        if self.single_reports.get(pod.key) == message:
            return
        self.single_reports[pod.key] = message
        self.recorder.event(pod_ref(pod), EventReason.FAILED_SCHEDULING.value, message, True)
        log.debug("pod=%s decision=unschedulable message=%r", pod.key, message)

    def pod_unreadable(self, ref: ObjectRef, message: str) -> None:
        """A pod whose spec cannot be read: one Event naming the field, per message."""
        key = f"{ref.namespace}/{ref.name}"
        if self.single_reports.get(key) == message:
            return
        self.single_reports[key] = message
        self.recorder.event(ref, EventReason.FAILED_SCHEDULING.value,
                            f"cannot read the pod, so it is not placed: {message}", True)
        log.info("pod=%s decision=invalid message=%r", key, message)

    def forget_pods(self, live: set[str]) -> None:
        for key in [k for k in self.single_reports if k not in live]:
            del self.single_reports[key]
