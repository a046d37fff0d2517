"""The scheduling loop: one cycle places every ready gang, then the single pods.

A gang's cycle, in named phases (kube-scheduler's, at gang granularity):
    discover -> snapshot -> solve -> assume -> bind -> confirm (watch) | forget + requeue
A gang that does not fit gets FailedScheduling Events and a PodGroup condition, and is
retried only when capacity may have appeared (a node changed, a pod went away) or after
`unschedulable_retry_s`, never in a hot loop. Events and status are written off the
binding path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from scheduler.binder import NOT_LEADER, Binder
from scheduler.cache import ClusterCache
from scheduler.config import Config
from scheduler.discovery import Gang, OwnerLookup, discover
from scheduler.events import EventRecorder, ObjectRef
from scheduler.fallback import choose_node
from scheduler.gangs import gang_from_pods
from scheduler.kube import KubeClient
from scheduler.metrics import SchedulerMetrics
from scheduler.state import (
    BINDING,
    BOUND,
    INVALID,
    REPAIRING,
    UNSCHEDULABLE,
    WAITING,
    GangState,
    read_constraints,
)
from solver.errors import BadRequest
from solver.explain import PlacementExplanation, explain_placement, remedies
from solver.nearby import home_shortfall, place_near
from solver.request import GangRequest, SolverConfig
from solver.result import Placement, Unschedulable
from solver.solve import solve
from topology.records import PodRecord
from topology.snapshot import TopologySnapshot, charged

log = logging.getLogger("phalanx.scheduler")
TRANSIENT_BIND_FAILURES = frozenset({0, 404, 429, 500, 502, 503, 504})


class Scheduler:
    def __init__(self, kube: KubeClient, config: Config) -> None:
        self.kube, self.config = kube, config
        self.capacity_version = 0
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.cache = ClusterCache(kube, config.preset, on_change=self._changed)
        self.binder = Binder(kube, config.bind_concurrency, allowed=lambda: self.leading())
        self.events = EventRecorder(kube, config.scheduler_name)
        self.owners = OwnerLookup(kube)
        self.gangs: dict[str, GangState] = {}
        self.single_reports: dict[str, str] = {}
        self.metrics = SchedulerMetrics()
        self._pruned_at = 0.0
        self.solver_config = SolverConfig(algorithm=config.algorithm,  # type: ignore[arg-type]
                                          time_limit_s=config.solver_time_limit_s)
        self.leading: Callable[[], bool] = lambda: True
        """Replaced by the leader elector's check when leader election is on."""
        self.metrics.watch_state(lambda: list(self.gangs.values()), self.cache.watch_ages,
                                 lambda: self.leading(), self.cache.relists,
                                 lambda: dict(kube.transient))

    # -- what the explain API reads (scheduler.api.views.ExplainSource) ---------------
    def topology_snapshot(self) -> TopologySnapshot:
        return self.cache.snapshot()

    def pod_nodes(self, keys: Iterable[str]) -> dict[str, str]:
        pods = self.cache.pods
        return {key: pod.node_name or "" for key in keys if (pod := pods.get(key))}

    def readiness(self) -> tuple[bool, bool]:
        return self.cache.synced(), self.leading()

    def _changed(self, kind: str) -> None:
        if kind in ("nodes", "capacity"):
            self.capacity_version += 1
        self.wake.set()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Scheduler:
        self.cache.start()
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        self.cache.stop()
        self.events.close()
        self.binder.close()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            if self.stopped.is_set():
                return
            self.cache.ensure_pod_group_watch()
            if not self.cache.synced() or not self.leading():
                continue
            try:
                self.cycle()
            except Exception:  # one bad cycle must not stop the scheduler
                log.exception("scheduling cycle failed")

    # -- one cycle --------------------------------------------------------------------
    def cycle(self) -> None:
        gangs, singles = discover(self.cache, self.config.scheduler_name,
                                  self.config.accelerators, self.owners)
        for gang in sorted(gangs, key=lambda g: (-g.priority, g.created, g.key)):
            if not self.leading():
                return  # lost the Lease mid-cycle: the new leader takes it from here
            self.schedule_gang(gang)
        self._prune({gang.key for gang in gangs})
        if singles and self.leading():
            self.schedule_singles(sorted(singles, key=lambda p: (-p.priority, p.created, p.key)),
                                  self.cache.snapshot())

    def _prune(self, pending: set[str]) -> None:
        """Forgets gangs that went away: a pending one as soon as it has no pending pods
        left, a bound one (checked every 10 s) once none of its pods exists any more."""
        for key, state in list(self.gangs.items()):
            if key not in pending and state.state not in (BOUND, REPAIRING, BINDING):
                del self.gangs[key]
        now = time.monotonic()
        if now - self._pruned_at < 10.0:
            return
        self._pruned_at = now
        pods = self.cache.pods
        for key, state in list(self.gangs.items()):
            if key in pending or not isinstance(state.result, Placement):
                continue
            namespace = key.split("/", 1)[0]
            if not any(f"{namespace}/{a.pod}" in pods for a in state.result.assignments):
                del self.gangs[key]
        live = {p.key for p in self.cache.pending(self.config.scheduler_name)}
        for key in [k for k in self.single_reports if k not in live]:
            del self.single_reports[key]

    def _record(self, gang: Gang) -> GangState:
        state = self.gangs.get(gang.key)
        if state is None:
            state = self.gangs[gang.key] = GangState(gang.key)
            state.move(WAITING)
        state.ref = gang.ref
        state.size = len(gang.pending) + gang.bound
        state.min_member = gang.min_member
        if gang.created and (not state.created or gang.created < state.created):
            state.created = gang.created
        first = gang.pending[0].annotations if gang.pending else {}
        state.constraints = read_constraints(dict(first), gang.annotations, gang.ref.kind)
        state.bound_pods = gang.bound
        return state

    def schedule_gang(self, gang: Gang) -> None:
        state = self._record(gang)
        self._check_timeout(gang, state)
        if gang.error is not None:
            state.error = gang.error
            state.move(INVALID)
            self._report_once(state, gang.ref, "InvalidGang", gang.error, gang.pending)
            return
        state.error = ""
        if not gang.ready:
            state.move(WAITING)
            return
        retry_due = time.monotonic() - state.attempted_at > self.config.unschedulable_retry_s
        if (state.state.startswith("Pending") and state.capacity_version ==
                self.capacity_version and not retry_due):
            return  # nothing changed since it did not fit
        request = gang_from_pods(gang.key, list(gang.pending), min(gang.needed,
                                 len(gang.pending)), gang.annotations)
        snapshot = self.cache.snapshot()
        state.capacity_version, state.attempted_at = self.capacity_version, time.monotonic()
        try:
            result = self._place(gang, state, request, snapshot)
        except BadRequest as exc:
            state.error = str(exc)
            state.move(INVALID)
            self._report_once(state, gang.ref, "InvalidGang", str(exc), gang.pending)
            return
        previous = state.result
        state.result, state.solved_at = result, time.time()
        self.metrics.solve_seconds.labels(result.status).observe(result.solver.solve_s)
        if isinstance(result, Unschedulable):
            state.explanation, state.remedies = None, remedies(result.diagnosis)
            self._unschedulable(gang, state, result, len(snapshot.nodes))
            return
        self._bind_gang(gang, state, result)
        state.explanation, state.remedies = self._explain(request, snapshot, result), ()
        if result.solver.algorithm == "nearby":
            state.result = _with_running(previous, result)

    def _place(self, gang: Gang, state: GangState, request: GangRequest,
               snapshot: TopologySnapshot) -> Placement | Unschedulable:
        """A gang with running members gets its missing ones next to them (never moving
        the running ones); a gang with none is solved whole."""
        if not gang.peers:
            return solve(request, snapshot, self.solver_config)
        request.validate(snapshot.levels)
        peers = {rank: node for rank, node in gang.peers if node in snapshot.tree.index}
        if not peers:  # the running members' nodes are gone: nothing to be near
            return solve(request, snapshot, self.solver_config)
        near = place_near(request, snapshot, peers, state.failed_nodes)
        if near is None and state.failed_nodes:
            # Avoiding nodes where binds failed must never be what keeps a gang pending.
            state.failed_nodes = {}
            near = place_near(request, snapshot, peers)
        if near is not None:
            return near
        if request.required_level is not None:
            return home_shortfall(request, snapshot, peers)
        # Not even one node fits some member: the whole-gang solver says why.
        return solve(request, snapshot, self.solver_config)

    def _explain(self, request: GangRequest, snapshot: TopologySnapshot,
                 placement: Placement) -> PlacementExplanation | None:
        try:
            return explain_placement(request, snapshot, placement)
        except Exception:  # an explanation must never cost a placement
            log.exception("gang %s: explaining the placement failed", request.name)
            return None

    def _check_timeout(self, gang: Gang, state: GangState) -> None:
        """scheduleTimeoutSeconds: a gang not placed in time gets an Event and starts a
        new wait (it stays queued: the next capacity change may still place it)."""
        if gang.timeout_s is None:
            return
        now = time.monotonic()
        if state.waiting_since == 0.0:
            state.waiting_since = now
        elif now - state.waiting_since > gang.timeout_s:
            state.waiting_since = now
            message = (f"gang {gang.key} not placed within scheduleTimeoutSeconds="
                       f"{gang.timeout_s:g} ({state.state}); still queued")
            self.events.event(gang.ref, "ScheduleTimeout", message, True)
            log.info("gang %s: %s", gang.key, message)

    def _bind_gang(self, gang: Gang, state: GangState, result: Placement) -> None:
        by_name = {p.name: p for p in gang.pending}
        placements = [(by_name[a.pod], a.node) for a in result.assignments]
        for pod, node in placements:  # assume: the room is taken before any bind returns
            self.cache.assume(pod, node)
        state.move(BINDING)
        results, bind_s = self.binder.bind_all([(p.key, node) for p, node in placements])
        state.bind_s = bind_s
        self.metrics.bind_seconds.observe(bind_s)
        unsent = [r for r in results if r.status == NOT_LEADER]
        for r in unsent:  # not a failure: this instance stopped leading; nothing to report
            self.cache.forget(r.pod)
        if unsent:
            results = [r for r in results if r.status != NOT_LEADER]
            log.info("gang %s: lost leadership while binding; %d bind(s) left to the new "
                     "leader", gang.key, len(unsent))
            if not results:
                state.move(WAITING)
                return
        failed = [r for r in results if not r.ok]
        self.metrics.pods_bound.labels("gang").inc(len(results) - len(failed))
        for r in failed:
            self.metrics.bind_errors.labels(str(r.status)).inc()
        for r in results:
            pod = by_name[r.pod.split("/", 1)[1]]
            if r.ok:
                self.events.event(_pod_ref(pod), "Scheduled",
                                  f"Successfully assigned {pod.key} to {r.node}")
            else:
                self.cache.forget(pod.key)
                if r.status not in TRANSIENT_BIND_FAILURES:
                    # Refused for this node (admission, conflict): try another next time.
                    # Timeouts, 429 and 5xx say nothing about the node.
                    state.failed_nodes = {**state.failed_nodes, pod.name: state.failed_nodes
                                          .get(pod.name, frozenset()) | {r.node}}
                self.events.event(_pod_ref(pod), "FailedScheduling",
                                  f"binding to {r.node} failed: {r.status} {r.reason}; it "
                                  f"will be placed next to its bound peers", True)
        bound = len(results) - len(failed)
        state.bound_pods = gang.bound + bound
        state.move(BOUND if not failed else REPAIRING)
        if failed:
            self.wake.set()  # repair at once: the next cycle places them next to the rest
        else:
            state.failed_nodes = {}
        metrics = result.metrics
        what = (f"replaced {bound}/{len(results)} member(s) next to {len(gang.peers)} running "
                f"peer(s)" if result.solver.algorithm == "nearby" else
                f"placed {bound}/{len(results)} pods")
        message = (f"{what} in {result.solver.solve_s:.3f}s "
                   f"({result.solver.algorithm} {result.solver.status}); domains used "
                   f"{metrics.domains_used}; lower bound {metrics.lower_bound}; ring hops "
                   f"{metrics.ring_hops}; bound in {bind_s:.3f}s")
        if failed:
            message += (f"; {len(failed)} bind(s) failed ("
                        + ", ".join(sorted({f"{r.status} {r.reason}"[:80] for r in failed}))
                        + "): repairing next to the bound members")
        self.events.event(gang.ref, "Scheduled" if not failed else "PartiallyBound", message,
                          bool(failed))
        if gang.ref.kind == "PodGroup":
            self.events.pod_group_status(gang.ref.namespace, gang.ref.name, {
                "phase": "Scheduled" if not failed else "Scheduling",
                "scheduled": gang.bound + bound,
                "conditions": [_condition("Scheduled", not failed, "Placed", message)],
            })
        log.info("gang %s: %s", gang.key, message)
        state.reported = ""

    def _unschedulable(self, gang: Gang, state: GangState, result: Unschedulable,
                       nodes: int) -> None:
        state.move(UNSCHEDULABLE)
        reason = result.reason
        message = f"0/{nodes} nodes are available for gang {gang.key}: {reason}"
        if state.reported == message:
            return
        state.reported = message
        for pod in gang.pending:
            self.events.event(_pod_ref(pod), "FailedScheduling", message, True)
        self.events.event(gang.ref, "FailedScheduling", message, True)
        if gang.ref.kind == "PodGroup":
            self.events.pod_group_status(gang.ref.namespace, gang.ref.name, {
                "phase": "Pending", "scheduled": gang.bound,
                "conditions": [_condition("Scheduled", False, result.diagnosis.code, reason)],
            })
        log.info("gang %s: unschedulable (%s): %s", gang.key, result.diagnosis.code, reason)

    def _report_once(self, state: GangState, ref: ObjectRef, reason: str, message: str,
                     pods: tuple[PodRecord, ...]) -> None:
        if state.reported == message:
            return
        state.reported = message
        self.events.event(ref, reason, message, True)
        for pod in pods:
            self.events.event(_pod_ref(pod), "FailedScheduling", message, True)
        if ref.kind == "PodGroup":
            self.events.pod_group_status(ref.namespace, ref.name, {
                "phase": "Pending",
                "conditions": [_condition("Scheduled", False, reason, message)]})
        log.info("gang %s: %s: %s", state.key, reason, message)

    def schedule_singles(self, pods: list[PodRecord], snapshot: TopologySnapshot) -> None:
        """kube-scheduler's per-pod filters and score, one pod after the other on one
        snapshot charged as they go (each placed pod assumed at once), then every bind
        concurrently, as kube-scheduler's binding cycles run beside its scheduling."""
        chosen: list[tuple[PodRecord, str]] = []
        for pod in pods:
            node, fit = choose_node(pod, snapshot)
            if node is None:
                reasons = ", ".join(f"{n} {r}" for r, n in sorted(fit.excluded.items()))
                message = f"0/{len(fit.capacity)} nodes are available: {reasons}"
                if self.single_reports.get(pod.key) != message:
                    self.single_reports[pod.key] = message
                    self.events.event(_pod_ref(pod), "FailedScheduling", message, True)
                continue
            self.cache.assume(pod, node)
            chosen.append((pod, node))
            snapshot = charged(snapshot, snapshot.tree.index[node], pod.requests)
        if not chosen:
            return
        results, _ = self.binder.bind_all([(pod.key, node) for pod, node in chosen])
        for (pod, node), result in zip(chosen, results, strict=True):
            if result.ok:
                self.metrics.pods_bound.labels("single").inc()
                self.single_reports.pop(pod.key, None)
                self.events.event(_pod_ref(pod), "Scheduled",
                                  f"Successfully assigned {pod.key} to {node}")
                log.debug("pod %s bound to %s", pod.key, node)
                continue
            self.cache.forget(pod.key)
            self.metrics.bind_errors.labels(str(result.status)).inc()
            self.events.event(_pod_ref(pod), "FailedScheduling",
                              f"binding to {node} failed: {result.status} {result.reason}", True)


def _with_running(previous: object, replacement: Placement) -> Placement:
    """The gang's whole placement after a replacement: the earlier assignments of the
    members still running, plus the replacements (so explain keeps showing every pod)."""
    if not isinstance(previous, Placement):
        return replacement
    replaced = {a.pod for a in replacement.assignments}
    kept = [a for a in previous.assignments if a.pod not in replaced]
    merged = sorted([*kept, *replacement.assignments], key=lambda a: (a.rank, a.pod))
    return replace(replacement, assignments=tuple(merged))


def _pod_ref(pod: PodRecord) -> ObjectRef:
    return ObjectRef("Pod", pod.namespace, pod.name, pod.uid)


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
