"""The soak's main loop: set up, then once a second start and finish work, start and
heal faults, and judge the API server's view; at the end heal everything, judge a full
list once more, and report.

    .venv/bin/python -m benchmarks.soak --minutes M --seed S [--nodes N]

The last line of stdout is the result as one JSON object (benchmarks.report); the
timeline plot is written to benchmarks/plots/soak-<seed>-<minutes>m.png (--plot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.soak import audit, invariants
from benchmarks.soak.faults import KINDS as FAULT_KINDS
from benchmarks.soak.faults import KWOK_LABEL, Context, Fault, cleanup_policies
from benchmarks.soak.invariants import (
    BindLedger,
    FaultClock,
    GangState,
    Need,
    NodeView,
    PodView,
    fits,
    members,
    usage,
)
from benchmarks.soak.observer import View
from benchmarks.soak.replicas import ACCOUNT, LEASE_NS, Replica, make_replicas, tracebacks
from benchmarks.soak.timeline import plot
from benchmarks.soak.workload import (
    CONTROLLED,
    GANG_LABEL,
    NS,
    PRIORITIES,
    SINGLE_LABEL,
    Gang,
    Single,
    Stream,
)
from kube import ApiError, KubeClient, api_path
from kube.resources import CRDS, NODES, POD_GROUPS, PODS
from localcluster.binaries import REPO
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import schedulable
from topology.synthetic import ClusterSpec, synth_nodes

WINDOW_S = 600.0
"""Every fault kind is injected at least once per window of this length."""
MAX_WAIT_S = 300.0
"""A gang still waiting after this long is withdrawn (its user gave up)."""
TICK_S = 1.0


@dataclass
class Tracked:
    gang: Gang
    state: GangState
    withdrawn: bool = False


@dataclass
class Run:
    """Everything one soak remembers."""

    args: argparse.Namespace
    start: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    gangs: dict[str, Tracked] = field(default_factory=dict)
    singles: list[Single] = field(default_factory=list)
    violations: list[tuple[float, str]] = field(default_factory=list)
    faults: list[tuple[float, float, str, str]] = field(default_factory=list)
    """(start, end, kind, detail) of each fault injected."""
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(t, gangs waiting, gangs bound and running, pods pending)."""
    log_lines: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Planned faults postponed past the fault window (blocking ones queue up)."""
    writes: list[tuple[float, str]] = field(default_factory=list)
    """(t, gang) of each scheduler request naming a gang's object (the audit log)."""

    def t(self) -> float:
        return time.monotonic() - self.start

    def log(self, line: str) -> None:
        text = f"[{self.t():7.1f}s] {line}"
        self.log_lines.append(text)
        print(text, file=sys.stderr, flush=True)

    def violation(self, what: str) -> None:
        self.violations.append((round(self.t(), 1), what))
        self.log(f"VIOLATION {what}")


def _setup(cluster: LocalCluster, args: argparse.Namespace, run: Run
           ) -> tuple[KubeClient, dict[str, dict[str, Any]], str]:
    cluster.up(timeout=300)
    kube = cluster.kube()
    nodes = synth_nodes(ClusterSpec(nodes=args.nodes, seed=args.seed))
    create_all(kube, nodes)
    wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0] if schedulable(n))
               >= args.nodes, 300, f"{args.nodes} nodes Ready", interval=2)
    for name in (NS, LEASE_NS):
        ensure_namespace(kube, name)
    kube.create(api_path("", "v1", "serviceaccounts", LEASE_NS),
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}})
    kube.create(api_path("rbac.authorization.k8s.io", "v1", "clusterrolebindings"), {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "soak-phalanx"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": LEASE_NS}]})
    token = kube.create(
        api_path("", "v1", "serviceaccounts", LEASE_NS, ACCOUNT, "token"),
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": int(args.minutes * 60 + 3600)}})["status"]["token"]
    for name, value in PRIORITIES.items():
        kube.create(api_path("scheduling.k8s.io", "v1", "priorityclasses"), {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value})
    crd = yaml.safe_load((REPO / "manifests" / "crd" / "podgroup.yaml").read_text())
    with contextlib.suppress(ApiError):
        kube.create(CRDS.path(), crd)
    wait_until(lambda: _served(kube), 60, "PodGroup CRD served")
    run.log(f"cluster {cluster.name}: {args.nodes} nodes Ready, controllers "
            f"{cluster.running_controllers}")
    return kube, {n["metadata"]["name"]: n for n in nodes}, token


def _served(kube: KubeClient) -> bool:
    try:
        kube.get(POD_GROUPS.path(NS))
        return True
    except ApiError:
        return False


def _fault_plan(rng: random.Random, run_s: float) -> list[tuple[float, type[Fault]]]:
    """Each kind once per window. Blocking kinds run one at a time, so they get evenly
    spaced slots of the window in a random order (a random time within each slot) and
    do not push each other into the next window; the others come at random times.
    Faults stop at 85 % of the run so the last ones heal while the run still judges."""
    first, last = min(20.0, run_s * 0.1), run_s * 0.85
    plan = []
    start = first
    while start < last:
        end = min(start + WINDOW_S, last)
        blocking = [kind for kind in FAULT_KINDS if kind.blocking]
        rng.shuffle(blocking)
        slot = (end - start) / len(blocking)
        for i, kind in enumerate(blocking):
            plan.append((start + slot * (i + rng.uniform(0.0, 0.5)), kind))
        for kind in FAULT_KINDS:
            if not kind.blocking:
                plan.append((rng.uniform(start, max(start, end - 10)), kind))
        start += WINDOW_S
    return sorted(plan, key=lambda item: item[0])


class Faults:
    """Starts planned faults on their own thread (an apiserver restart takes seconds; the
    checks go on meanwhile), one blocking fault at a time; heals each when its time is up."""

    def __init__(self, ctx: Context, run: Run, plan: list[tuple[float, type[Fault]]]) -> None:
        self.ctx, self.run, self.plan = ctx, run, plan
        self.active: list[tuple[Fault, float]] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="soak-fault")
        self.busy: Future[None] | None = None
        self.blocking_busy = False
        self.last = run.args.minutes * 60.0 * 0.9

    @property
    def blocking(self) -> bool:
        return self.blocking_busy or any(f.blocking for f, _ in self.active)

    def step(self, now: float) -> None:
        if self.busy is not None and not self.busy.done():
            return
        if self.busy is not None:
            error = self.busy.exception()
            if error is not None:
                self.run.log(f"fault action failed: {error!r}")
            self.busy = None
        for fault, until in list(self.active):
            if now >= until:
                self.active.remove((fault, until))
                self.blocking_busy = fault.blocking
                self.busy = self.pool.submit(self._heal, fault)
                return
        if not self.plan or self.plan[0][0] > now:
            return
        if now > self.last:  # postponed past the fault window: it could not heal in time
            self.run.skipped += [kind.kind for _, kind in self.plan]
            self.plan.clear()
            return
        kind = self.plan[0][1]
        if kind.blocking and self.blocking:
            return  # one blocking fault at a time: postponed until the last one healed
        self.plan.pop(0)
        fault = kind(self.ctx)
        self.blocking_busy = fault.blocking
        self.busy = self.pool.submit(self._inject, fault, now)

    def _inject(self, fault: Fault, now: float) -> None:
        began = self.run.t()
        try:
            injected = fault.inject()
        finally:
            self.blocking_busy = False
        if not injected:
            self.plan.insert(0, (now + 2.0, type(fault)))  # e.g. no leader yet: retry
            return
        # A restart's inject returns once the component serves again: it ends then.
        end = self.run.t() + fault.duration
        self.active.append((fault, end))
        self.run.faults.append((began, end, fault.kind, fault.detail))
        self.run.log(f"fault {fault.kind} {fault.detail} until {end:.0f}s")

    def _heal(self, fault: Fault) -> None:
        try:
            fault.heal()
            self.run.log(f"healed {fault.kind}")
        finally:
            self.blocking_busy = False

    def heal_all(self) -> None:
        if self.busy is not None:
            with contextlib.suppress(Exception):
                self.busy.result(300)
        for fault, _ in reversed(self.active):
            try:
                fault.heal()
                self.run.log(f"healed {fault.kind} (end of run)")
            except Exception as exc:  # heal the rest whatever one did
                self.run.log(f"heal {fault.kind} failed: {exc!r}")
        self.active.clear()
        self.pool.shutdown()


class Work:
    """Creates and deletes the stream's objects on a small thread pool (a 512-pod gang is
    512 creates), so the checks keep their one-second beat. Both retry through faults
    (an apiserver restart, a 429 storm): a lost delete would leave a gang holding its
    nodes for the rest of the run, unwatched."""

    RETRY_S = 300.0

    def __init__(self, kube: KubeClient, run: Run) -> None:
        self.kube, self.run = kube, run
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="soak-work")

    def create(self, objects: list[tuple[str, dict[str, Any]]]) -> None:
        self.pool.submit(self._retried, "create", self._create, objects)

    def delete(self, objects: list[tuple[str, dict[str, Any]]], label: str, name: str) -> None:
        self.pool.submit(self._retried, f"delete {name}", self._delete, objects, label, name)

    def _retried(self, what: str, action: Callable[..., None], *args: Any) -> None:
        deadline = time.monotonic() + self.RETRY_S
        while True:
            try:
                action(*args)
                return
            except Exception as exc:  # whatever a fault does to one attempt: try again
                if time.monotonic() > deadline:
                    self.run.log(f"{what} failed for good: {exc!r}")
                    return
                time.sleep(2.0)

    def _create(self, objects: list[tuple[str, dict[str, Any]]]) -> None:
        create_all(self.kube, [body for _, body in objects], concurrency=16,
                   path_of=_path_of(objects))

    def _delete(self, objects: list[tuple[str, dict[str, Any]]], label: str, name: str
                ) -> None:
        for path, body in reversed(objects):
            if body["kind"] == "Pod":
                continue
            try:
                self.kube.delete(f"{path}/{body['metadata']['name']}",
                                 propagationPolicy="Background")
            except ApiError as exc:
                if exc.status != 404:
                    raise
        self.kube.call("DELETE", PODS.path(NS), query={"labelSelector": f"{label}={name}"})


def _path_of(objects: list[tuple[str, dict[str, Any]]]) -> Callable[[dict[str, Any]], str]:
    paths = {id(body): path for path, body in objects}
    return lambda body: paths[id(body)]


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
    """The per-second checks over the view."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.ledger = BindLedger()
        self.clock = FaultClock()
        self.last_clock = 0.0
        self.seen_over: set[str] = set()

    def tick(self, pods_raw: list[dict[str, Any]], nodes_raw: list[dict[str, Any]],
             blocking: bool) -> tuple[int, int, int]:
        wall = self.run.t()
        clock = self.clock.tick(wall, blocking)
        dt, self.last_clock = clock - self.last_clock, clock
        nodes = {n["metadata"]["name"]: NodeView.from_api(n) for n in nodes_raw}
        pods = [PodView.from_api(p, GANG_LABEL) for p in pods_raw]
        for what in self.ledger.update(pods):
            self.run.violation(what)
        used = usage(pods)
        for what in invariants.overcommitted(nodes, used):
            node = what.split()[0]
            if node not in self.seen_over:
                self.seen_over.add(node)
                self.run.violation(f"over-committed: {what}")
        by_gang: dict[str, list[PodView]] = {}
        for pod in pods:
            if pod.gang:
                by_gang.setdefault(pod.gang, []).append(pod)
        started: list[tuple[GangState, set[str]]] = []
        candidates: list[tuple[GangState, Need]] = []
        observed = []
        waiting = bound = pending = 0
        for name, tracked in self.run.gangs.items():
            if tracked.gang.deleted_at is not None:
                continue
            own = by_gang.get(name, [])
            got = members(own)
            need = _need(tracked, got, own, nodes) if got.pending else None
            state = tracked.state
            if got.bound and state.first_bound is None:
                started.append((state, {p.uid for p in own if p.node}))
            if need is not None and got.bound == 0 and state.complete is None:
                candidates.append((state, need))
            observed.append((tracked, got, need))
            pending += got.pending
        for what in invariants.inversions(started, candidates, nodes, pods, clock):
            self.run.violation(what)
        for tracked, got, need in observed:
            fit = need is not None and fits(need, nodes, used)
            for what in invariants.advance(tracked.state, got, fit, wall, clock, dt):
                self.run.violation(what)
            if tracked.state.complete is None:
                waiting += 1
            else:
                bound += 1
        return waiting, bound, pending


RSS_WARMUP_S = 300.0
RSS_JUDGED_FROM_S = 1200.0
"""Runs shorter than this report RSS but do not judge it: measured on 3-minute runs, a
scheduler's RSS steps up once by 15-35 % when it re-lists everything after an apiserver
restart (the old cache and the new lists alive at once; CPython keeps the high-water
mark), and in 3 minutes nothing comes after that step to tell a step from growth."""


def _incarnation_growth(replicas: list[Replica], run_s: float) -> float | None:
    """The largest RSS growth of any scheduler process after its warm-up (its first
    RSS_WARMUP_S after it first led: the cache fills as the cluster does, the first
    re-lists happen), over at least as long again; None when no process lived that
    long."""
    growths = []
    for replica in replicas:
        for life in replica.history:
            begin = (life.led_at or life.started) + RSS_WARMUP_S
            growth = invariants.rss_growth(life.rss, begin, RSS_WARMUP_S)
            if growth is not None:
                growths.append(growth)
    return max(growths) if growths else None


def soak(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    rng = random.Random(args.seed)
    stream = Stream(args.seed, args.nodes, args.minutes * 60.0)
    run_s = args.minutes * 60.0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster.for_this_process(
        "soak", controllers=("jobset", "lws", "training-operator"),
        audit_policy=audit.policy(),
        extra_args={
            # APF on (kwokctl turns it off): the 429 storm is an APF priority level.
            "kube-apiserver": {"enable-priority-and-fairness": "true"},
            # KWOK heartbeats only nodes labelled type=kwok: the NotReady fault takes the
            # label away (with an annotation selector KWOK keeps renewing the Lease).
            "kwok-controller": {"manage-all-nodes": "false",
                                "manage-nodes-with-label-selector": f"{KWOK_LABEL}=kwok"},
            # kwokctl scales the node monitor's grace to 200 s with its heartbeat factor;
            # KWOK renews each Lease every ~50 s, so 100 s marks a silent node NotReady
            # within two missed renewals and never a live one.
            "kube-controller-manager": {"node-monitor-grace-period": "100s",
                                        "node-monitor-period": "5s"}})
    replicas: list[Replica] = []
    view: View | None = None
    faults: Faults | None = None
    try:
        kube, node_objects, token = _setup(cluster, args, run)
        replicas = make_replicas(cluster.kubeconfig, token, workdir)
        for replica in replicas:
            replica.start()
        wait_until(lambda: sum(r.leader() for r in replicas) == 1, 90, "one leader")
        view = View(cluster.kube()).start()
        domains = sorted({(invariants.LEVELS[1], n["metadata"]["labels"][invariants.LEVELS[1]])
                          for n in node_objects.values()})
        ctx = Context(cluster, kube, replicas, random.Random(args.seed + 1), run.log,
                      node_objects)
        faults = Faults(ctx, run, _fault_plan(random.Random(args.seed + 2), run_s))
        work = Work(kube, run)
        judge = Judge(run)
        mean_nodes = 30.0 if args.nodes >= 1000 else 14.0
        gang_every = 200.0 * mean_nodes / (0.9 * args.nodes)
        next_gang, next_single = 1.0, 2.0
        run.start = time.monotonic()
        run.wall0 = time.time()
        run.log(f"soak: {args.minutes} min, seed {args.seed}, {args.nodes} nodes, a gang "
                f"every {gang_every:.1f}s on average, {len(faults.plan)} faults planned")
        last_tick = run.t()
        end = run_s + invariants.GRACE_S + 5
        while run.t() < end:
            now = run.t()
            arriving = now < run_s
            while arriving and next_gang <= now:
                gang = stream.gang()
                gang.created_at = now
                run.gangs[gang.name] = Tracked(gang, GangState(gang.name, gang.size,
                                                               gang.priority, now))
                work.create(gang.objects)
                next_gang += rng.expovariate(1.0 / gang_every)
            while arriving and next_single <= now:
                single = stream.single(domains)
                single.created_at = now
                run.singles.append(single)
                work.create(single.objects)
                next_single += rng.expovariate(1.0 / 4.0)
            _departures(run, work, now, run_s)
            if now < run_s:
                faults.step(now)
            elif faults.active or faults.busy is not None:
                faults.heal_all()
            _watch_replicas(run, replicas)
            if view.current:
                pods_raw, nodes_raw = view.snapshot()
                counts = judge.tick(pods_raw, nodes_raw, faults.blocking)
                run.timeline.append((round(now, 1), *counts))
            else:
                judge.clock.tick(run.t(), True)
            last_tick += TICK_S
            time.sleep(max(0.0, last_tick - run.t()))
        faults.heal_all()
        _final_checks(run, kube, judge)
        run.writes = [(t - run.wall0, gang)
                      for t, gang, _ in audit.gang_requests(cluster.audit_log)]
    finally:
        if faults is not None:
            faults.heal_all()
        with contextlib.suppress(Exception):
            cleanup_policies(cluster.kube())
        if view is not None:
            view.stop()
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.stop()
        if not args.keep:
            cluster.down()
    return _report(run, replicas, cluster, run_s)


def _departures(run: Run, work: Work, now: float, run_s: float) -> None:
    for tracked in run.gangs.values():
        gang, state = tracked.gang, tracked.state
        if gang.deleted_at is not None:
            continue
        done = state.complete is not None and now >= state.complete + gang.lifetime_s
        gave_up = state.complete is None and now - gang.created_at > min(MAX_WAIT_S,
                                                                          run_s / 2)
        if done or gave_up:
            gang.deleted_at = now
            tracked.withdrawn = gave_up
            work.delete(gang.objects, GANG_LABEL, gang.name)
    for single in run.singles:
        if single.deleted_at is None and now >= single.created_at + single.lifetime_s:
            single.deleted_at = now
            work.delete(single.objects, SINGLE_LABEL, single.name)


def _watch_replicas(run: Run, replicas: list[Replica]) -> None:
    now = time.monotonic()
    for replica in replicas:
        life = replica.current
        if life is None:
            continue
        if life.killed:
            continue  # a leader-kill fault's; its heal starts the next incarnation
        if life.ended is None and life.process.poll() is not None:
            life.ended = now
            run.violation(f"replica {replica.index} exited by itself "
                          f"(code {life.process.returncode}); restarted")
            replica.start()
            continue
        if life.ended is None:
            life.sample_rss(now)
            if life.led_at is None and replica.leader():
                life.led_at = now


def _final_checks(run: Run, kube: KubeClient, judge: Judge) -> None:
    """A full list from the API server, not the watch: the same checks once more."""
    pods = [PodView.from_api(p, GANG_LABEL) for p in kube.list_all(PODS.path())[0]]
    nodes = {n["metadata"]["name"]: NodeView.from_api(n)
             for n in kube.list_all(NODES.path())[0]}
    for what in judge.ledger.update(pods):
        run.violation(f"final list: {what}")
    for what in invariants.overcommitted(nodes, usage(pods)):
        run.violation(f"final list: over-committed: {what}")


def _report(run: Run, replicas: list[Replica], cluster: LocalCluster, run_s: float
            ) -> dict[str, Any]:
    args = run.args
    rss = {f"replica{r.index}-{i}": [(round(t - run.start, 1), kib) for t, kib in life.rss]
           for r in replicas for i, life in enumerate(r.history)}
    (Path(args.workdir) / "rss.json").write_text(json.dumps(rss))
    for replica in replicas:
        for life in replica.history:
            for line in tracebacks(life.log):
                run.violations.append((-1.0, f"replica {replica.index} log {life.log.name}: "
                                             f"unhandled exception: {line}"))
    growth = _incarnation_growth(replicas, run_s)
    judged = run_s >= RSS_JUDGED_FROM_S
    if judged and growth is not None and growth >= 0.10:
        run.violations.append((-1.0, f"scheduler RSS grew {growth:.1%} after warm-up"))
    # Waiting: from arrival until the first member binds (binding writes a Scheduled Event
    # per pod; a partly bound gang is the all-or-nothing check's business).
    spans = {name: [(tr.gang.created_at, min(t for t in (
        tr.state.first_bound, tr.gang.deleted_at, run_s) if t is not None))]
        for name, tr in run.gangs.items()}
    worst = invariants.requests_per_gang_minute(run.writes, spans)
    for name, count in sorted(worst.items()):
        bound = invariants.request_bound(run.gangs[name].gang.size)
        if count > bound:
            run.violations.append((-1.0, f"gang {name}: {count:.0f} scheduler requests in one "
                                         f"minute of waiting (bound {bound})"))
    ttb = sorted(tr.state.complete - tr.gang.created_at for tr in run.gangs.values()
                 if tr.state.complete is not None)
    kinds: dict[str, int] = {}
    for _, _, kind, _ in run.faults:
        kinds[kind] = kinds.get(kind, 0) + 1
    plot_path = Path(args.plot or REPO / "benchmarks" / "plots" /
                     f"soak-{args.seed}-{args.minutes:g}m.png")
    plot(run.timeline, run.faults, plot_path,
         f"soak: {args.minutes:g} min, seed {args.seed}, {args.nodes} nodes")
    return {
        "benchmark": "soak", "minutes": args.minutes, "seed": args.seed, "nodes": args.nodes,
        "violations": [{"t_s": t, "what": w} for t, w in run.violations] or 0,
        "faults": dict(sorted(kinds.items())),
        "fault_kinds_missing": sorted({k.kind for k in FAULT_KINDS} - set(kinds)),
        "faults_skipped": run.skipped,
        "gangs_created": len(run.gangs),
        "gangs_bound": len(ttb),
        "gangs_withdrawn": sum(1 for tr in run.gangs.values() if tr.withdrawn),
        "gang_kinds_bound": sorted({tr.gang.kind for tr in run.gangs.values()
                                    if tr.state.complete is not None}),
        "singles": len(run.singles),
        "time_to_bound_p50_s": round(statistics.median(ttb), 2) if ttb else None,
        "time_to_bound_p95_s": round(ttb[max(0, int(len(ttb) * 0.95) - 1)], 2)
        if ttb else None,
        "rss_growth": round(growth, 4) if growth is not None else None,
        "rss_judged": judged,
        "max_requests_per_waiting_gang_minute": max(worst.values(), default=0.0),
        "scheduler_processes": sum(len(r.history) for r in replicas),
        "scheduler_rss_mib": {name: [round(rows[0][1] / 1024), round(rows[-1][1] / 1024)]
                              for name, rows in rss.items() if rows},
        "scheduler_requests_attributed": len(run.writes),
        "t_s": invariants.T_S,
        "plot": str(plot_path),
        "cluster": cluster.name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--plot", default="", help="where the timeline PNG goes")
    parser.add_argument("--workdir", default="", help="replica logs and kubeconfigs")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)
    if not args.workdir:
        args.workdir = str(Path("/tmp") / f"phalanx-soak-{args.seed}-{int(time.time())}")
    result = soak(args)
    width = max(len(key) for key in result)
    for key, value in result.items():  # the table for people, on stderr
        print(f"{key:<{width}}  {value}", file=sys.stderr)
    print(json.dumps(result), flush=True)  # the last line of stdout, for scripts
    return 0 if result["violations"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
