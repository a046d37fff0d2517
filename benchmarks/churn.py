"""Churn on KWOK (issue 18): the job trace replayed on one live cluster, scheduler by scheduler.

    .venv/bin/python -m benchmarks.churn [--nodes 512] [--jobs 120] [--seed 1] [--load 0.9]
        [--median-duration 40] [--max-pods 128]
        [--schedulers phalanx,kube-scheduler,kube-scheduler-gang] [--out DIR]

One fresh local control plane (`localcluster`, real etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, KWOK) with `--nodes` synthetic p5 nodes, empty.
The trace is `benchmarks.trace` (published statistics it follows, and which numbers are
ours, in its docstring), durations compressed to seconds. For each scheduler in turn, on
the same nodes, the same jobs at the same offsets from its start:

- arrival: a Parallel StatefulSet of `pods` 8-GPU pods (`kwok_placement.statefulset`)
  with the job's PriorityClass (three, all `preemptionPolicy: Never`: priority orders the
  queues, nobody is evicted) and, for a job that requires a domain,
  `phalanx.dev/required-topology` naming the level (`benchmarks.replay.required_level`;
  kube-scheduler has no such rule and ignores it: its domains are measured all the same).
  Every scheduler other than Phalanx is a `benchmarks.peers` peer, and its `gang()` adds
  what makes the job one gang for it (kube-scheduler-gang: a `scheduling.k8s.io/v1alpha2`
  PodGroup with gang minCount; kube-scheduler-tas: the same with one required level it
  picks; kueue-tas: Kueue's queue label and topology annotation), created with the job
  and deleted at its completion. Peers are built before the cluster starts; one that
  cannot be built or started is reported with the command and its error.
- start: the job's last pod seen bound (one pod watch, one clock); then its domains are
  measured and its optimum solved on the watch's state with its own pods' room given back.
- completion: `duration_s` after the start the StatefulSet (and the peer's objects) is deleted;
  its GPUs are free again when the pods are gone.
- the run ends one median duration after the last arrival; jobs not whole by then are
  "never started". GPUs held by pods of jobs not yet whole ("partial") are sampled too:
  kube-scheduler without gangs binds what fits and holds it.

Every second: GPUs allocated (bound, undeleted pods), partial, free, and fragmented
(`benchmarks.replay`). The scheduler process's CPU seconds over its run are reported
beside wall time (the machine is shared). Writes `churn-<time>.json` and one PNG per
metric to `--out`, and prints the table RESULTS.md records.
"""

from __future__ import annotations

import argparse
import heapq
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from benchmarks.kwok_placement import process_cpu_seconds, start_phalanx, statefulset
from benchmarks.peers import PEERS, GangSpec, Peer, PeerUnavailable, apply_gang, load
from benchmarks.replay import (
    GPU,
    GPUS_PER_POD,
    JobRecord,
    Sample,
    fragmented_gpus,
    gang_request,
    render,
    required_level,
    summarize,
)
from benchmarks.report import print_result
from benchmarks.trace import PRIORITIES, Job, TraceSpec, generate, median_pods
from kube import KubeClient, Watcher
from kube.resources import NODES, PODS, PRIORITY_CLASSES, STATEFULSETS
from localcluster.binaries import REPO
from localcluster.bulk import ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate, schedulable
from scheduler.sources.base import REQUIRED
from solver.assign import measure
from solver.request import SolverConfig
from solver.result import Assignment, Placement
from solver.solve import solve
from topology.presets import PRESETS
from topology.records import node_from_json
from topology.snapshot import DomainTree, TopologySnapshot, build_tree, render_path, snapshot_of
from topology.synthetic import ClusterSpec

NS = "churn-bench"
OPTIMUM = SolverConfig(time_limit_s=5.0, seed=0, workers=1)


@dataclass
class _Pod:
    job: str
    name: str
    node: str | None = None
    bound_at: float | None = None


class Tracker:
    """Every trace pod as one watch sees it: its job (label `app`), its node and when it
    was first seen bound; a pod is dropped when the watch says it is gone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pods: dict[str, _Pod] = {}

    def replace(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.pods.clear()
        for item in items:
            self.event("ADDED", item)

    def event(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(meta["uid"], None)
                return
            pod = self.pods.setdefault(meta["uid"], _Pod(
                (meta.get("labels") or {}).get("app", ""), meta["name"]))
            node = (obj.get("spec") or {}).get("nodeName")
            if node and pod.node is None:
                pod.node, pod.bound_at = node, now

    def copy(self) -> list[_Pod]:
        with self.lock:
            return [replace(pod) for pod in self.pods.values()]


@dataclass
class Run:
    scheduler: str
    records: list[JobRecord]
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float | None = None
    notes: dict[str, int] = field(default_factory=dict)
    """What the scheduler's gang specs said (which level a peer was told), and for how
    many jobs."""


def _used(tree: DomainTree, pods: list[_Pod], skip: str = "") -> dict[str, dict[str, int]]:
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        if pod.node is not None and pod.job != skip and pod.node in tree.index:
            slot = used.setdefault(pod.node, {GPU: 0, "pods": 0})
            slot[GPU] += GPUS_PER_POD
            slot["pods"] += 1
    return used


def _sample(tree: DomainTree, pods: list[_Pod], started: set[str], now: float,
            need_gpus: int) -> Sample:
    used = _used(tree, pods)
    free = tree.allocatable(GPU).copy()
    for node, usage in used.items():
        free[tree.index[node]] -= usage[GPU]
    allocated = sum(u[GPU] for u in used.values())
    partial = sum(GPUS_PER_POD for p in pods if p.node is not None and p.job not in started)
    return Sample(now, allocated, partial, int(free.sum()),
                  fragmented_gpus(tree, free, need_gpus))


def _measure(tree: DomainTree, record: JobRecord, mine: list[_Pod], pods: list[_Pod]) -> None:
    """The job's domains, and the fewest it could have had in the room it was placed into
    (the watch's state with its own pods' room given back; as asked, or, when the job
    was placed against its required level, as it is)."""
    request = gang_request(record.job, tree)
    snapshot = snapshot_of(tree, _used(tree, pods, skip=record.job.name))
    optimum = solve(request, snapshot, OPTIMUM)
    if not isinstance(optimum, Placement):
        optimum = solve(replace(request, required_level=None), snapshot, OPTIMUM)
    assignments = tuple(
        Assignment(p.name, int(p.name.rsplit("-", 1)[1]), p.node,
                   render_path(tree.node_path(tree.index[p.node])))
        for p in mine if p.node is not None)
    lower = dict(optimum.metrics.lower_bound) if isinstance(optimum, Placement) else {}
    record.domains_used = dict(measure(tree, assignments, lower).domains_used)
    if isinstance(optimum, Placement):
        record.optimum, record.lower_bound = dict(optimum.metrics.domains_used), lower


def _create(kube: KubeClient, tree: DomainTree, job: Job, scheduler_name: str,
            gang: GangSpec) -> None:
    """The job's StatefulSet, after the objects its scheduler needs for a gang."""
    workload = statefulset(job.name, job.pods, scheduler_name, GPUS_PER_POD, namespace=NS)
    workload["spec"]["template"]["spec"]["priorityClassName"] = job.priority.name
    if job.required:
        workload["metadata"]["annotations"] = {REQUIRED: required_level(tree, job.pods)}
    for obj in gang.objects:
        kube.create(obj.resource.path(NS), obj.body)
    kube.create(STATEFULSETS.path(NS), apply_gang(workload, gang))


def _complete(kube: KubeClient, job: Job, gang: GangSpec) -> None:
    kube.delete(STATEFULSETS.path(NS, job.name), propagationPolicy="Background")
    for obj in gang.objects:
        kube.delete(obj.resource.path(NS, obj.name))


def _solve_s(explain: str | None, job: Job) -> float | None:
    """Phalanx's own solve time for the job, from its explain API."""
    if explain is None:
        return None
    try:
        detail = httpx.get(f"{explain}/v1/groups/{NS}/{job.name}", timeout=30,
                           params={"kind": "StatefulSet"}).json()
    except httpx.HTTPError:
        return None  # the measurement is lost, not the run
    value = detail.get("solve_s")
    return float(value) if value is not None else None


def replay(kube: KubeClient, tree: DomainTree, jobs: list[Job], scheduler: Scheduler,
           end_s: float) -> Run:
    """The trace through one scheduler, in real time (see the module docstring)."""
    tracker = Tracker()
    watcher = Watcher(kube, PODS.path(NS), name="churn-pods", on_replace=tracker.replace,
                      on_event=tracker.event).start()
    watcher.synced.wait(30)
    run = Run(scheduler.name, [JobRecord(job) for job in jobs])
    gangs: dict[int, GangSpec] = {}
    need_gpus = median_pods(jobs) * GPUS_PER_POD
    arrivals = list(jobs)
    completions: list[tuple[float, int]] = []
    live: set[int] = set()
    started: set[str] = set()
    cpu0, t0 = scheduler.cpu_seconds(), time.monotonic()
    next_sample = 0.0
    try:
        while (now := time.monotonic() - t0) < end_s:
            while arrivals and arrivals[0].arrival_s <= now:
                job = arrivals.pop(0)
                gangs[job.number] = scheduler.gang(job, snapshot_of(
                    tree, _used(tree, tracker.copy())))
                _create(kube, tree, job, scheduler.scheduler_name, gangs[job.number])
                live.add(job.number)
                if gangs[job.number].note:
                    # "required <level>: why ...": the level told, counted per job.
                    said = str(gangs[job.number].note).split(":", 1)[0]
                    run.notes[said] = run.notes.get(said, 0) + 1
            pods = tracker.copy()
            by_job: dict[str, list[_Pod]] = {}
            for pod in pods:
                by_job.setdefault(pod.job, []).append(pod)
            for index in sorted(live):
                job, record = jobs[index], run.records[index]
                mine = by_job.get(job.name, [])
                if job.name in started or len(mine) < job.pods or any(
                        p.bound_at is None for p in mine):
                    continue
                started.add(job.name)
                record.start_s = max(p.bound_at or 0.0 for p in mine) - t0
                _measure(tree, record, mine, pods)
                record.solve_s = _solve_s(scheduler.explain, job)
                heapq.heappush(completions, (record.start_s + job.duration_s, index))
            while completions and completions[0][0] <= now:
                _, index = heapq.heappop(completions)
                _complete(kube, jobs[index], gangs.pop(index))
                live.discard(index)
            if now >= next_sample:
                run.samples.append(_sample(tree, pods, started, now, need_gpus))
                next_sample += 1.0
            time.sleep(0.1)
        run.wall_s = time.monotonic() - t0
        run.cpu_s = scheduler.cpu_seconds() - cpu0
    finally:
        watcher.stop()
        for index, gang in gangs.items():
            _complete(kube, jobs[index], gang)
    return run


def _clear(kube: KubeClient) -> None:
    for sts in kube.list_all(STATEFULSETS.path(NS))[0]:
        kube.delete(STATEFULSETS.path(NS, sts["metadata"]["name"]),
                    propagationPolicy="Background")
    wait_until(lambda: not kube.list_all(PODS.path(NS))[0], 300, "churn pods gone",
               interval=0.5)


def _priority_classes(kube: KubeClient) -> None:
    for priority in PRIORITIES:
        kube.create(PRIORITY_CLASSES.path(), {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": priority.name}, "value": priority.value,
            "preemptionPolicy": "Never",
            "description": "benchmarks.churn: orders the queue, preempts nothing"})


class Scheduler:
    """Phalanx (`phalanx run`, started here) or a peer (`benchmarks.peers`): what the
    replay needs of either: the pods' schedulerName, a job's gang objects and fields,
    the CPU seconds of the processes doing the scheduling, and Phalanx's explain API."""

    def __init__(self, name: str, peer: Peer | None) -> None:
        self.name, self.peer = name, peer
        self.scheduler_name = peer.scheduler_name if peer else "phalanx"
        self.explain: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pids: list[int] = []

    def start(self, cluster: LocalCluster) -> None:
        if self.peer is None:
            self._process, self.explain = start_phalanx(cluster)
            self._pids = [self._process.pid]
        else:
            self.peer.start(cluster)
            self._pids = self.peer.pids(cluster)

    def gang(self, job: Job, snapshot: TopologySnapshot) -> GangSpec:
        return self.peer.gang(job.name, job.pods, snapshot) if self.peer else GangSpec()

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self._pids)

    def stop(self) -> None:
        if self.peer is not None:
            self.peer.stop()
        elif self._process is not None:
            self._process.terminate()
            self._process.wait(10)


def run_scheduler(kube: KubeClient, cluster: LocalCluster, tree: DomainTree, jobs: list[Job],
                  scheduler: Scheduler, end_s: float) -> Run:
    try:
        scheduler.start(cluster)
        return replay(kube, tree, jobs, scheduler, end_s)
    finally:
        scheduler.stop()
        _clear(kube)


def _prepare(names: list[str]) -> tuple[list[Scheduler], dict[str, str]]:
    """Phalanx and every peer asked for, built before the cluster starts (a Go build
    must not share the cores with a running control plane); the unavailable ones with
    the command and error that stopped them."""
    ready, unavailable = [], {}
    for name in names:
        if name == "phalanx":
            ready.append(Scheduler(name, None))
            continue
        try:
            peer = load(name)
            peer.prepare()
        except PeerUnavailable as exc:
            unavailable[name] = str(exc)
            continue
        ready.append(Scheduler(name, peer))
    return ready, unavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--median-duration", type=float, default=40.0,
                        help="median job duration, seconds")
    parser.add_argument("--max-pods", type=int, default=128)
    parser.add_argument("--required-share", type=float, default=0.5)
    parser.add_argument("--schedulers", default="phalanx,kube-scheduler,kube-scheduler-gang",
                        help=f"any of phalanx, {', '.join(PEERS)}")
    parser.add_argument("--name", default="phalanx-bench-churn")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = parser.parse_args(argv)
    schedulers = args.schedulers.split(",")
    unknown = sorted(set(schedulers) - {"phalanx", *PEERS})
    if unknown:
        parser.error(f"--schedulers: unknown {unknown}; expected some of phalanx, "
                     f"{', '.join(PEERS)}")
    spec = TraceSpec(jobs=args.jobs, seed=args.seed, capacity_pods=args.nodes, load=args.load,
                     median_duration_s=args.median_duration, duration_sigma=0.8,
                     min_duration_s=10.0, max_duration_s=10 * args.median_duration,
                     max_pods=args.max_pods, required_share=args.required_share)
    jobs = generate(spec)
    end_s = jobs[-1].arrival_s + spec.median_duration_s
    wall = time.monotonic()
    ready, unavailable = _prepare(schedulers)
    cluster = LocalCluster(name=args.name)
    cluster.down()
    runs: list[Run] = []
    try:
        cluster.up()
        kube = cluster.kube()
        populate(kube, ClusterSpec(nodes=args.nodes, seed=args.seed))
        wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0]
                               if schedulable(n)) == args.nodes, 180, "nodes schedulable")
        ensure_namespace(kube, NS)
        _priority_classes(kube)
        tree = build_tree([node_from_json(n) for n in kube.list_all(NODES.path())[0]],
                          PRESETS["aws"])
        for scheduler in ready:
            try:
                runs.append(run_scheduler(kube, cluster, tree, jobs, scheduler, end_s))
            except PeerUnavailable as exc:
                unavailable[scheduler.name] = str(exc)
                continue
            print(f"{scheduler.name}: "
                  f"{sum(1 for r in runs[-1].records if r.start_s is not None)}"
                  f"/{len(jobs)} started, CPU {runs[-1].cpu_s:.1f} s", flush=True)
        version = kube.get("/version")["gitVersion"]
    finally:
        cluster.down()
    steady = jobs[-1].arrival_s / 2
    total = int(tree.allocatable(GPU).sum())
    report = {
        "benchmark": "churn", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nodes": args.nodes, "gpus": total, "kubernetes": version, "trace": spec.__dict__,
        "end_s": end_s, "steady_from_s": steady, "median_pods": median_pods(jobs),
        "required_levels": {str(p): required_level(tree, p)
                            for p in sorted({j.pods for j in jobs})},
        "duration_s": round(time.monotonic() - wall, 1), "unavailable": unavailable,
        "notes": {r.scheduler: r.notes for r in runs if r.notes},
        "rows": [summarize(r.scheduler, r.records, r.samples, total, steady,
                           jobs[-1].arrival_s)
                 | {"wall_s": round(r.wall_s, 1),
                    "scheduler_cpu_s": round(r.cpu_s, 1) if r.cpu_s is not None else None}
                 for r in runs],
        "series": {r.scheduler: [list(s) for s in r.samples] for r in runs},
        "jobs": {r.scheduler: [rec.to_json() for rec in r.records] for r in runs},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"churn-{stamp}.json"
    path.write_text(json.dumps(report))
    from benchmarks.replay_plots import plot_all

    pngs = plot_all(report, out, f"churn-{stamp}")
    print(render(report["rows"]))
    print_result({"json": str(path), "plots": [str(p) for p in pngs],
                  "duration_s": report["duration_s"],
                  "scheduler_cpu_s": {r.scheduler: r.cpu_s for r in runs}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
