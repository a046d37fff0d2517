"""The per-second judgement of the watched view, and the final one of a full list:
invariants.py's checks wired to the run's gangs and clocks."""

from __future__ import annotations

from benchmarks.soak import invariants
from benchmarks.soak.invariants import (
    BindLedger,
    FaultClock,
    GangState,
    Need,
    NodeView,
    PodView,
    Room,
    fits,
    members,
    usage,
)
from benchmarks.soak.observer import Moment
from benchmarks.soak.state import Run, Tracked
from benchmarks.soak.workload import CONTROLLED, GANG_LABEL
from kube import KubeClient
from kube.resources import NODES, PODS


def _need(tracked: Tracked, got: invariants.Members, pods: list[PodView],
          nodes: dict[str, NodeView]) -> Need | None:
    """What the gang still needs to be whole, or None when no scheduler could complete
    it now (members lost for good, or a repair whose home domain is gone)."""
    gang = tracked.gang
    missing = gang.size - got.bound
    recreated = gang.kind in (*CONTROLLED, "StatefulSet", "Job")
    if not recreated and got.bound + got.pending < gang.size:
        return None  # bare pods lost to a fault: nobody recreates them
    requests = {"cpu": gang.shape.cpu_m, "memory": gang.shape.memory_mi << 20,
                "nvidia.com/gpu": gang.shape.gpus, "pods": 1}
    if got.bound == 0:
        return Need(requests, missing, gang.required, gang.slice_level, gang.slice_size)
    if gang.slice_level:
        return None  # a slice's repair goes to its home domain: not modelled here
    within = None
    if gang.required:
        node = next((nodes.get(p.node) for p in pods if p.node and not p.terminating), None)
        if node is None:
            return None
        depth = invariants.LEVELS.index(gang.required) + 1
        within = {k: node.labels.get(k, "") for k in invariants.LEVELS[:depth]}
    return Need(requests, missing, within=within)


class Judge:
    """The per-second checks over the view. A watch can run behind the API server (on a
    loaded machine: tens of seconds), so what the view says broke is confirmed against a
    fresh list before it counts; what the fresh list does not confirm restarts its clock
    and is counted in `unconfirmed`. While the view is more than LAG_LIMIT_S old (the
    beacon, observer.View.lag_s) nothing is judged and the fault-free clock stands still;
    those seconds are counted in `unjudged_s`."""

    LAG_LIMIT_S = 10.0

    def __init__(self, run: Run, kube: KubeClient) -> None:
        self.run, self.kube = run, kube
        self.ledger = BindLedger()
        self.clock = FaultClock()
        self.last_clock = 0.0
        self.seen_over: set[str] = set()
        self.unconfirmed = 0
        self.unjudged_s = 0.0
        self.last_wall: float | None = None
        self.fault_grace_until = 0.0
        self.resumed = False
        """The first tick after a pause: gangs that bound during it are not judged."""

    def _fresh(self) -> list[PodView] | None:
        try:
            items = self.kube.list_all(PODS.path())[0]
        except Exception:  # the API server is down or throttled: nothing can be confirmed
            return None
        return [PodView.from_api(p, GANG_LABEL) for p in items]

    def pause(self, blocking: bool) -> None:
        """A second the view cannot be judged (resyncing, or too far behind). It counts
        as unjudged unless a blocking fault or its grace explains it (a restarted
        apiserver's watches re-list then)."""
        wall = self.run.t()
        self._note_fault(wall, blocking)
        if self.last_wall is not None and wall >= self.fault_grace_until:
            self.unjudged_s += wall - max(self.last_wall, self.fault_grace_until)
        self.last_wall = wall
        self.clock.tick(wall, True)
        # What happened while unjudged is not known: no gang has fitted "without a
        # break" across it, and gangs that first bound meanwhile are not held to the
        # priority order (their moment was not seen).
        for tracked in self.run.gangs.values():
            tracked.state.fit_clock, tracked.state.fitting_since = 0.0, None
        self.resumed = True

    def _note_fault(self, wall: float, blocking: bool) -> None:
        if blocking:
            self.fault_grace_until = wall + invariants.GRACE_S

    def tick(self, moment: Moment, blocking: bool) -> tuple[int, int, int]:
        wall = self.run.t()
        self._note_fault(wall, blocking)
        self.last_wall = wall
        clock = self.clock.tick(wall, blocking)
        dt, self.last_clock = clock - self.last_clock, clock
        nodes, used = moment.nodes, moment.used
        for what in self.ledger.update(moment.changed):
            self.run.violation(what)
        fresh: list[PodView] | None = None
        over = [w for w in invariants.overcommitted(nodes, used)
                if w.split()[0] not in self.seen_over]
        if over:
            fresh = self._fresh()
            confirmed = invariants.overcommitted(nodes, usage(fresh)) if fresh else []
            for what in confirmed:
                if what.split()[0] not in self.seen_over:
                    self.seen_over.add(what.split()[0])
                    self.run.violation(f"over-committed: {what}")
            self.unconfirmed += len({w.split()[0] for w in over}
                                    - {w.split()[0] for w in confirmed})
        room = Room(nodes, used)
        started: list[tuple[GangState, list[PodView]]] = []
        candidates: list[tuple[GangState, Need]] = []
        observed = []
        waiting = bound = pending = 0
        for name, tracked in self.run.gangs.items():
            if tracked.gang.deleted_at is not None:
                continue
            own = moment.gangs.get(name, [])
            got = members(own)
            need = _need(tracked, got, own, nodes) if got.pending else None
            state = tracked.state
            if got.bound and state.first_bound is None:
                started.append((state, [p for p in own if p.node]))
            if need is not None and got.bound == 0 and state.complete is None:
                candidates.append((state, need))
            observed.append((tracked, got, need))
            pending += got.pending
        if not self.resumed:
            for what in invariants.inversions(started, candidates, room, clock):
                self.run.violation(what)
        self.resumed = False
        suspects: list[tuple[Tracked, str]] = []
        for tracked, got, need in observed:
            fit = need is not None and room.fits(need)
            for what in invariants.advance(tracked.state, got, fit, wall, clock, dt):
                suspects.append((tracked, what))
            if tracked.state.complete is None:
                waiting += 1
            else:
                bound += 1
        if suspects:
            fresh = fresh if fresh is not None else self._fresh()
            for tracked, what in suspects:
                if fresh is not None and _still_broken(tracked, what, fresh, nodes):
                    self.run.violation(what)
                    continue
                self.unconfirmed += 1
                kind = "fit" if "fitted for" in what else "partial"
                tracked.state.flagged.discard(kind)
                if kind == "fit":
                    tracked.state.fit_clock = 0.0
                else:
                    tracked.state.partial_clock = 0.0
        return waiting, bound, pending


def _by_gang(pods: list[PodView]) -> dict[str, list[PodView]]:
    by_gang: dict[str, list[PodView]] = {}
    for pod in pods:
        if pod.gang:
            by_gang.setdefault(pod.gang, []).append(pod)
    return by_gang


def _still_broken(tracked: Tracked, what: str, fresh: list[PodView],
                  nodes: dict[str, NodeView]) -> bool:
    """Whether a fresh list shows what the view said: pending members that fit, or a
    never-complete gang with members bound and pending."""
    own = _by_gang(fresh).get(tracked.gang.name, [])
    got = members(own)
    if "fitted for" in what:
        need = _need(tracked, got, own, nodes) if got.pending else None
        return need is not None and fits(need, nodes, usage(fresh))
    return got.bound > 0 and got.pending > 0 and got.bound < tracked.gang.size


def final_checks(run: Run, kube: KubeClient, judge: Judge) -> None:
    """A full list from the API server, not the watch: the same checks once more."""
    pods = [PodView.from_api(p, GANG_LABEL) for p in kube.list_all(PODS.path())[0]]
    nodes = {n["metadata"]["name"]: NodeView.from_api(n)
             for n in kube.list_all(NODES.path())[0]}
    for what in judge.ledger.update(pods):
        run.violation(f"final list: {what}")
    for what in invariants.overcommitted(nodes, usage(pods)):
        run.violation(f"final list: over-committed: {what}")


