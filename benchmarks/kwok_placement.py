"""KWOK placement benchmark: the same workload through Phalanx and kube-scheduler.

    .venv/bin/python -m benchmarks.kwok_placement [--nodes 5000] [--quick] [--out DIR]
        [--workload statefulset|jobset] [--schedulers phalanx,kube-scheduler,...]

One fresh local control plane with `--nodes` synthetic p5 nodes and fragmented existing
load. For each scheduler in turn, on the same nodes and load: CPU-only pods, then gangs
(StatefulSets of 8-GPU pods, `--gangs` sizes) arriving one after another, each once the
previous one is bound, so every gang meets the capacity its predecessors left. With
`--workload jobset` each gang is a JobSet instead (run by the real JobSet controller) of
Jobs of `--slice-pods` pods, each Job alone in a layer-3 domain
(`alpha.jobset.sigs.k8s.io/exclusive-topology`): kube-scheduler places them through
JobSet's webhook (leader pod affinity/anti-affinity, followers pinned to the leader's
domain), Phalanx as slices. Before a
gang arrives its offline optimum is solved on the API server's current state (the lower
bounds and the fewest domains per level); after, its placement is read back from the API
server and measured. Then the workload is deleted and the next scheduler runs.
At the end: the API server's own write ceiling (ConfigMap creates at 128 in flight), and
a check that no node is over-committed.

Peers, all on the same cluster, one module each in benchmarks/peers (the `Peer`
protocol: this file knows nothing peer-specific): kube-scheduler v1.36 with its default
plugins (the cluster's own, client QPS limits lifted); the same kube-scheduler with its
in-tree gang scheduling (`kube-scheduler-gang`: GangScheduling, a
scheduling.k8s.io/v1alpha2 PodGroup per gang); a second v1.36 kube-scheduler with
topology-aware workload scheduling (`kube-scheduler-tas`: one required topology level per
gang, NodeResourcesFit packing by GPUs); Kueue v0.17.0's TAS admitting each gang, the
cluster's kube-scheduler binding (`kueue-tas`: preferred lowest network level, built by
hack/build-kueue.sh; `kueue-tas-required`: required at the level kube-scheduler-tas gets);
and scheduler-plugins' Coscheduling (`coscheduling`, built from its Go module by
hack/build-coscheduling.sh).
Peers are built before the cluster starts; one that cannot be built or started is
recorded in the results with the exact command and error, never dropped silently.

Writes `placement-<time>.json`, and PNG plots, to `--out` (default benchmarks/out).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.peers import (
    PEERS,
    ApiObject,
    GangSpec,
    Peer,
    PeerUnavailable,
    apply_gang,
    load,
)
from benchmarks.peers.kube_scheduler import KubeScheduler, KubeSchedulerGang
from benchmarks.podwatch import PodTimes, watch_pods
from benchmarks.report import print_result
from kube import ApiError, KubeClient
from kube.resources import (
    CONFIG_MAPS,
    JOBSETS,
    NODES,
    PODS,
    STATEFULSETS,
)
from localcluster.binaries import REPO
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.ports import free_port
from localcluster.synthnodes import populate, schedulable
from scheduler.offline import request_from_workload
from solver.assign import measure
from solver.instance import NODE_LEVEL
from solver.request import SolverConfig
from solver.result import Assignment, Placement
from solver.solve import solve
from topology.presets import PRESETS
from topology.records import node_from_json, pod_from_json
from topology.snapshot import TopologySnapshot, build_snapshot, render_path, usage_from_pods
from topology.synthetic import ClusterSpec

NS = "placement-bench"
SCHEDULERS = {"phalanx": "phalanx", "kube-scheduler": KubeScheduler.scheduler_name,
              "kube-scheduler-gang": KubeSchedulerGang.scheduler_name}
"""schedulerName of the schedulers other KWOK benchmarks (preempt_kwok) run."""
CHOICES = ("phalanx", *PEERS)
"""What --schedulers takes: Phalanx and every registered peer."""


@dataclass
class GangRun:
    name: str
    size: int
    create_to_all_bound_s: float
    """From the workload's creation to its last pod bound."""
    time_to_all_bound_s: float
    first_to_last_bind_s: float
    bind_pods_per_s: float
    domains_used: dict[str, int]
    lower_bound: dict[str, int | None]
    optimum: dict[str, int]
    ring_hops: int
    max_distance: int
    solve_s: float | None = None
    bind_s: float | None = None
    cpu_s: float | None = None
    """The scheduler process's CPU (/proc/<pid>/stat) from the workload's creation to its
    last pod bound: solve, binds, Events, watch handling, everything."""
    cpu_s_per_1000_binds: float | None = None
    note: str | None = None
    """What the peer says about this gang (e.g. the one topology level it was told)."""


@dataclass
class SchedulerRun:
    scheduler: str
    gangs: list[GangRun] = field(default_factory=list)
    cpu_pods_bound_s: float = 0.0
    pods_per_s: float = 0.0
    peak_rss_mb: float | None = None
    cpu_s: float | None = None
    """The scheduler process's CPU over the whole run (CPU pods and gangs)."""
    cpu_s_per_1000_binds: float | None = None
    unschedulable_s: float = 0.0
    placement: dict[str, int] = field(default_factory=dict)
    """Pods of the largest gang per layer-3 domain path (for the heat map)."""
    unavailable: str | None = None
    """Why this peer did not run: the exact command and its error (no gangs then)."""


def _snapshot(kube: KubeClient) -> TopologySnapshot:
    nodes = [node_from_json(n) for n in kube.list_all(NODES.path())[0]]
    pods = [pod_from_json(p) for p in kube.list_all(PODS.path())[0]]
    return build_snapshot(nodes, usage_from_pods(pods), PRESETS["aws"])


def statefulset(name: str, replicas: int, scheduler: str, gpus: int,
                pod_group: str | None = None, namespace: str = NS) -> dict[str, Any]:
    """A Parallel StatefulSet of `gpus`-GPU pods (CPU pods when 0), the benchmarks' gang."""
    resources = ({"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else
                 {"requests": {"cpu": "4", "memory": "8Gi"}})
    extra = {"schedulingGroup": {"podGroupName": pod_group}} if pod_group else {}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "serviceName": name,
                     "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"schedulerName": scheduler, **extra,
                                           "containers": [
                                      {"name": "w", "image": "trainer",
                                       "resources": resources}]}}}}


LAYER3 = PRESETS["aws"].keys[3]


def _jobset(name: str, size: int, scheduler: str, slice_pods: int) -> dict[str, Any]:
    """`size // slice_pods` Jobs of `slice_pods` 8-GPU pods, each alone in a layer-3 domain."""
    return {"apiVersion": JOBSETS.api_version, "kind": "JobSet",
            "metadata": {"name": name, "namespace": NS, "annotations": {
                "alpha.jobset.sigs.k8s.io/exclusive-topology": LAYER3}},
            "spec": {"replicatedJobs": [{"name": "w", "replicas": size // slice_pods,
                                         "template": {"spec": {
                                             "parallelism": slice_pods,
                                             "completions": slice_pods, "backoffLimit": 0,
                                             "template": {
                                                 "metadata": {"labels": {"app": name}},
                                                 "spec": {"schedulerName": scheduler,
                                                          "restartPolicy": "Never",
                                                          "containers": [{
                                                              "name": "w", "image": "trainer",
                                                              "resources": {"limits": {
                                                                  "nvidia.com/gpu": "8"}}}]}}}}}]}}


def _rank(pod: dict[str, Any], slice_pods: int) -> int:
    labels = pod["metadata"]["labels"]
    if "apps.kubernetes.io/pod-index" in labels:
        return int(labels["apps.kubernetes.io/pod-index"])
    return (int(labels["jobset.sigs.k8s.io/job-global-index"]) * slice_pods
            + int(labels["batch.kubernetes.io/job-completion-index"]))


def _pods(kube: KubeClient, app: str) -> list[dict[str, Any]]:
    return kube.list_all(PODS.path(NS), {"labelSelector": f"app={app}"})[0]


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (the fields after the command
    name, which may hold spaces: utime and stime are the 14th and 15th)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_thousand(cpu_s: float, binds: int) -> float | None:
    return round(1000 * cpu_s / binds, 3) if binds else None


def _run_gang(kube: KubeClient, times: PodTimes, name: str, size: int, scheduler: str,
              explain: str | None, peer: Peer | None, slice_pods: int = 0,
              pids: list[int] | None = None) -> tuple[GangRun, dict[str, int], GangSpec]:
    """One gang: a StatefulSet, or (`slice_pods`) an exclusive-topology JobSet; as the
    peer wants it (its objects created first, its fields on the pods). Returns the peer's
    GangSpec too: its objects are deleted once the pods are gone."""
    workload = (_jobset(name, size, scheduler, slice_pods) if slice_pods else
                statefulset(name, size, scheduler, 8))
    before = _snapshot(kube)
    # The optimum of the bare workload: a peer's PodGroup would make `phalanx place` name
    # the gang after the PodGroup, not the StatefulSet it reads.
    offline = solve(request_from_workload(copy.deepcopy(workload)), before,
                    SolverConfig(time_limit_s=5.0))
    assert isinstance(offline, Placement), f"{name} cannot fit: {offline.to_json()}"
    spec = peer.gang(name, size, before) if peer is not None else GangSpec()
    apply_gang(workload, spec)
    for obj in spec.objects:
        kube.create(obj.resource.path(NS), obj.body)
    cpu0 = _cpu_seconds(pids) if pids else 0.0
    created = time.monotonic()
    kube.create((JOBSETS if slice_pods else STATEFULSETS).path(NS), workload)
    def done() -> bool:
        pods = _pods(kube, name)
        return len(pods) == size and all(p["spec"].get("nodeName") for p in pods)
    wait_until(done, 600, f"{name} bound", interval=0.1)
    cpu = _cpu_seconds(pids) - cpu0 if pids else None
    time.sleep(0.3)  # the watch delivers the last bindings
    pods = _pods(kube, name)
    uids = [p["metadata"]["uid"] for p in pods]
    with times.lock:
        last_exists = max(times.added[u] for u in uids)
        binds = sorted(times.bound[u][0] for u in uids)
    tree = _snapshot(kube).tree
    assignments = tuple(
        Assignment(p["metadata"]["name"], _rank(p, slice_pods), p["spec"]["nodeName"],
                   render_path(tree.node_path(tree.index[p["spec"]["nodeName"]])))
        for p in pods)
    metrics = measure(tree, assignments, offline.metrics.lower_bound)
    spread = binds[-1] - binds[0]
    run = GangRun(name=name, size=size, create_to_all_bound_s=round(binds[-1] - created, 3),
                  time_to_all_bound_s=round(binds[-1] - last_exists, 3),
                  first_to_last_bind_s=round(spread, 3),
                  bind_pods_per_s=round(size / spread, 1) if spread > 0 else float(size),
                  domains_used=metrics.domains_used, lower_bound=metrics.lower_bound,
                  optimum=offline.metrics.domains_used, ring_hops=metrics.ring_hops,
                  max_distance=metrics.max_distance,
                  cpu_s=round(cpu, 3) if cpu is not None else None,
                  cpu_s_per_1000_binds=_per_thousand(cpu, size) if cpu is not None else None,
                  note=spec.note)
    if explain:
        detail = httpx.get(f"{explain}/v1/groups/{NS}/{name}", timeout=30,
                           params={"kind": "JobSet" if slice_pods else "StatefulSet"}).json()
        run.solve_s, run.bind_s = detail.get("solve_s"), detail.get("bind_s")
    level = tree.levels.index(LAYER3)
    racks: dict[str, int] = {}
    for a in assignments:
        path = render_path(tree.paths[level][int(tree.domain_of[level][tree.index[a.node]])])
        racks[path] = racks.get(path, 0) + 1
    return run, racks, spec


def start_phalanx(cluster: LocalCluster) -> tuple[subprocess.Popen[bytes], str]:
    """`phalanx run` on the cluster, ready; and its explain API's URL."""
    explain = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig",
         str(cluster.kubeconfig), "--http-address", explain.removeprefix("http://")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _ready(explain), 60, "phalanx ready")
    return process, explain


def run_scheduler(kube: KubeClient, cluster: LocalCluster, scheduler: str,
                  sizes: list[int], cpu_pods: int, slice_pods: int = 0,
                  peer: Peer | None = None) -> tuple[SchedulerRun, list[ApiObject]]:
    """Phalanx (`peer` None) or a prepared peer through the CPU pods and the gangs; the
    objects the peer had created for its gangs, to delete once their pods are gone."""
    result, objects = SchedulerRun(scheduler), list[ApiObject]()
    process, explain = None, None
    if peer is None:
        process, explain = start_phalanx(cluster)
        pids, scheduler_name = [process.pid], "phalanx"
    else:
        try:
            peer.start(cluster)
        except PeerUnavailable as exc:
            peer.stop()
            result.unavailable = f"`{exc.command}` failed: {exc.error}"
            return result, objects
        pids, scheduler_name = peer.pids(cluster), peer.scheduler_name
    times, watcher = watch_pods(kube, NS)
    started, cpu0 = time.monotonic(), _cpu_seconds(pids)
    try:
        if cpu_pods:
            kube.create(STATEFULSETS.path(NS),
                        statefulset("cpu", cpu_pods, scheduler_name, 0))
            t0 = time.monotonic()
            wait_until(lambda: sum(1 for p in _pods(kube, "cpu") if p["spec"].get("nodeName"))
                       == cpu_pods, 300, "CPU pods bound", interval=0.1)
            result.cpu_pods_bound_s = round(time.monotonic() - t0, 3)
        largest = max(sizes)
        for index, size in enumerate(sizes):
            run, racks, spec = _run_gang(kube, times, f"g{index}-{size}", size,
                                         scheduler_name, explain, peer, slice_pods, pids)
            result.gangs.append(run)
            objects += spec.objects
            if size == largest:
                result.placement = racks
        elapsed = time.monotonic() - started
        result.pods_per_s = round((sum(sizes) + cpu_pods) / elapsed, 1)
        result.cpu_s = round(_cpu_seconds(pids) - cpu0, 3)
        result.cpu_s_per_1000_binds = _per_thousand(result.cpu_s, sum(sizes) + cpu_pods)
        peaks = [_vm_hwm_mb(pid) for pid in pids]
        result.peak_rss_mb = sum(p for p in peaks if p is not None) if None not in peaks else None
        if process is not None:
            groups = httpx.get(f"{explain}/v1/groups", timeout=30).json()["groups"]
            for group in groups:
                detail = httpx.get(f"{explain}/v1/groups/{NS}/{group['name']}", timeout=30,
                                   params={"kind": group["kind"]})
                result.unschedulable_s += _pending_seconds(detail.json()["transitions"])
    finally:
        watcher.stop()
        if process is not None:
            process.terminate()
            process.wait(10)
        if peer is not None:
            peer.stop()
    return result, objects


def _pending_seconds(transitions: list[dict[str, str]]) -> float:
    total, since = 0.0, None
    for step in transitions:
        at = time.mktime(time.strptime(step["at"][:19], "%Y-%m-%dT%H:%M:%S"))
        if step["state"] == "Pending: unschedulable":
            since = at
        elif since is not None:
            total, since = total + at - since, None
    return total


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _clear(kube: KubeClient, objects: Sequence[ApiObject] = ()) -> None:
    """Deletes the benchmark's workloads, waits until their pods are gone, then deletes
    the objects a peer created for its gangs (a PodGroup outliving its pods is harmless,
    one deleted before them could let a half-gang be scheduled)."""
    for sts in kube.list_all(STATEFULSETS.path(NS))[0]:
        kube.delete(STATEFULSETS.path(NS, sts["metadata"]["name"]))
    try:
        for jobset in kube.list_all(JOBSETS.path(NS))[0]:
            kube.delete(JOBSETS.path(NS, jobset["metadata"]["name"]),
                        propagationPolicy="Background")
    except ApiError as exc:
        if exc.status != 404:  # served only with the JobSet workload
            raise
    wait_until(lambda: not kube.list_all(PODS.path(NS))[0], 300,
               "benchmark pods gone", interval=0.5)
    for obj in objects:
        try:
            kube.delete(obj.resource.path(NS, obj.name))
        except ApiError as exc:
            if exc.status != 404:
                raise


def overcommitted(kube: KubeClient) -> list[str]:
    """Nodes whose bound, unfinished pods request more than the node allocates."""
    snapshot = _snapshot(kube)
    bad = np.flatnonzero((snapshot.free < 0).any(axis=1))
    return [snapshot.nodes[i].name for i in bad.tolist()]


def write_ceiling(kube: KubeClient, count: int) -> float:
    report = create_all(kube, [{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": f"ceiling-{i}", "namespace": NS},
                                "data": {"k": "v"}} for i in range(count)],
                        concurrency=128,
                        path_of=lambda obj: CONFIG_MAPS.path(NS))
    return round(report.per_second, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--gangs", default="64,128,256,512,1024",
                        help="gang sizes in arrival order (pods x 8 GPUs)")
    parser.add_argument("--cpu-pods", type=int, default=200)
    parser.add_argument("--occupancy", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--schedulers", default="phalanx,kube-scheduler,kube-scheduler-gang",
                        help=f"any of {', '.join(CHOICES)}")
    parser.add_argument("--workload", choices=("statefulset", "jobset"), default="statefulset",
                        help="each gang a StatefulSet, or an exclusive-topology JobSet run "
                             "by the real JobSet controller")
    parser.add_argument("--slice-pods", type=int, default=16,
                        help="pods per Job of a JobSet gang (each Job alone in a layer-3 "
                             "domain); gang sizes must be multiples of it")
    parser.add_argument("--quick", action="store_true",
                        help="1,500 nodes, gangs 64,128,256, 50 CPU pods: under 3 minutes")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    parser.add_argument("--name", default="phalanx-bench-placement",
                        help="the local cluster's name (runs side by side need their own)")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.gangs, args.cpu_pods = 1500, "64,128,256", 50
    sizes = [int(s) for s in args.gangs.split(",")]
    wall = time.monotonic()
    schedulers = args.schedulers.split(",")
    unknown = sorted(set(schedulers) - set(CHOICES))
    if unknown:
        parser.error(f"--schedulers: unknown {unknown}; expected some of {list(CHOICES)}")
    slice_pods = args.slice_pods if args.workload == "jobset" else 0
    # Peers are built before the cluster starts: a cold Go build must not share the two
    # cores with a running control plane (nor time out its leases).
    peers, unavailable, prepare_s = prepare_peers([s for s in schedulers if s != "phalanx"])
    wrong = [name for name, peer in peers.items() if args.workload not in peer.workloads]
    if wrong:
        parser.error(f"--workload {args.workload}: not supported by {wrong}")
    if slice_pods and any(size % slice_pods for size in sizes):
        parser.error(f"--gangs: every size must be a multiple of --slice-pods {slice_pods}")
    cluster = LocalCluster(name=args.name,
                           controllers=("jobset",) if slice_pods else ())
    cluster.down()
    runs: list[SchedulerRun] = []
    try:
        cluster.up()
        kube = cluster.kube()
        populate(kube, ClusterSpec(nodes=args.nodes, occupancy=args.occupancy, seed=args.seed))
        wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0]
                               if schedulable(n)) == args.nodes, 180, "nodes schedulable")
        ensure_namespace(kube, NS)
        for scheduler in schedulers:
            if scheduler in unavailable:
                runs.append(SchedulerRun(scheduler, unavailable=unavailable[scheduler]))
                continue
            run, objects = run_scheduler(kube, cluster, scheduler, sizes, args.cpu_pods,
                                         slice_pods, peers.get(scheduler))
            runs.append(run)
            bad = overcommitted(kube)
            if bad:
                raise SystemExit(f"{scheduler}: over-committed nodes: {bad[:10]}")
            _clear(kube, objects)
        ceiling = write_ceiling(kube, 1024)
        version = kube.get("/version")["gitVersion"]
    finally:
        cluster.down()
    report = {
        "benchmark": "kwok_placement", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                             time.gmtime()),
        "nodes": args.nodes, "occupancy": args.occupancy, "gangs": sizes,
        "workload": args.workload, "slice_pods": slice_pods or None,
        "cpu_pods": args.cpu_pods, "kubernetes": version, "apiserver_write_ceiling": ceiling,
        "peers_prepare_s": prepare_s, "duration_s": round(time.monotonic() - wall, 1),
        "runs": [run.__dict__ | {"gangs": [g.__dict__ for g in run.gangs]} for run in runs],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"placement-{stamp}.json").write_text(json.dumps(report, indent=2))
    from benchmarks.placement_plots import plot_all

    pngs = plot_all(report | {"runs": [r for r in report["runs"] if r["gangs"]]}, out, stamp)
    print(render(report))
    print_result({"json": str(out / f"placement-{stamp}.json"), "plots": [str(p) for p in pngs],
                  "duration_s": report["duration_s"]})
    return 0


def prepare_peers(names: list[str]) -> tuple[dict[str, Peer], dict[str, str], dict[str, float]]:
    """Loads and builds each peer: those ready, those not (the exact command and error),
    and how long each took to prepare (a cold build shows here)."""
    ready: dict[str, Peer] = {}
    unavailable: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in names:
        start = time.monotonic()
        try:
            peer = load(name)
            peer.prepare()
        except PeerUnavailable as exc:
            unavailable[name] = f"`{exc.command}` failed: {exc.error}"
        except ImportError as exc:
            unavailable[name] = f"`import {PEERS[name].partition(':')[0]}` failed: {exc!r}"
        else:
            ready[name] = peer
        seconds[name] = round(time.monotonic() - start, 1)
        print(f"kwok_placement: {name} prepared in {seconds[name]} s"
              + (f": UNAVAILABLE {unavailable[name]}" if name in unavailable else ""),
              file=sys.stderr)
    return ready, unavailable, seconds


def render(report: dict[str, Any]) -> str:
    """The markdown table RESULTS.md records."""
    layer3 = PRESETS["aws"].keys[3]
    lines = ["| scheduler | gang | created to all bound | last pod to all bound | binds/s | "
             "CPU s / 1,000 binds | layer-3 used (optimum, lower bound) | layer-2 used "
             "(optimum) | layer-1 used (optimum) | every level at the optimum | "
             "domains / Phalanx's (layer 1, 2, 3) | ring hops | max distance |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    layer2, layer1 = PRESETS["aws"].keys[2], PRESETS["aws"].keys[1]
    ran = [run for run in report["runs"] if run["gangs"]]
    phalanx = {g["name"]: g for run in ran if run["scheduler"] == "phalanx"
               for g in run["gangs"]}
    for run in ran:
        for g in run["gangs"]:
            lines.append(
                f"| {run['scheduler']} | {g['size']} | {g['create_to_all_bound_s']:.2f} s | "
                f"{g['time_to_all_bound_s']:.2f} s | "
                f"{g['bind_pods_per_s']:.0f} | {g.get('cpu_s_per_1000_binds')} | "
                f"{g['domains_used'][layer3]} "
                f"({g['optimum'][layer3]}, {g['lower_bound'][layer3]}) | "
                f"{g['domains_used'][layer2]} ({g['optimum'][layer2]}) | "
                f"{g['domains_used'][layer1]} ({g['optimum'][layer1]}) | "
                f"{'yes' if matches_optimum(g) else 'no'} | "
                f"{_ratios(g, phalanx.get(g['name']))} | {g['ring_hops']} | "
                f"{g['max_distance']} |")
    by = {run["scheduler"]: run for run in ran}
    if "phalanx" in by and "kube-scheduler" in by:
        ratios = [k["domains_used"][layer3] / p["domains_used"][layer3]
                  for p, k in zip(by["phalanx"]["gangs"], by["kube-scheduler"]["gangs"],
                                  strict=True)]
        lines.append(f"\nkube-scheduler spread the same gangs over {min(ratios):.1f}-"
                     f"{max(ratios):.1f}x (median {statistics.median(ratios):.1f}x) as many "
                     f"layer-3 domains as Phalanx.")
    lines += [f"{run['scheduler']} {g['name']}: {g['note']}"
              for run in ran for g in run["gangs"] if g.get("note")]
    lines += [f"{run['scheduler']}: UNAVAILABLE, {run['unavailable']}"
              for run in report["runs"] if run.get("unavailable")]
    lines += against_peers(by)
    for run in ran:
        lines.append(f"{run['scheduler']}: {run['pods_per_s']} pods/s overall, peak RSS "
                     f"{run['peak_rss_mb']} MB, CPU pods bound in {run['cpu_pods_bound_s']} s, "
                     f"unschedulable {run['unschedulable_s']:.1f} s, CPU {run.get('cpu_s')} s "
                     f"({run.get('cpu_s_per_1000_binds')} s per 1,000 binds)")
    lines += bind_rates(by)
    lines.append(f"API server write ceiling (same run): {report['apiserver_write_ceiling']}/s")
    return "\n".join(lines)


RATIO_LEVELS = PRESETS["aws"].keys[1:4]
"""Network layers 1 (top) to 3 (nearest the nodes): the levels a gang's spread is
compared at (the zone is one domain for every gang here)."""


def _ratios(gang: dict[str, Any], ours: dict[str, Any] | None) -> str:
    """Domains the gang used per level over Phalanx's for the same gang."""
    if ours is None:
        return "-"
    return ", ".join(f"{gang['domains_used'][k] / ours['domains_used'][k]:.2f}"
                     for k in RATIO_LEVELS)


def against_peers(by: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's bar, checked: per gang, Phalanx's domains per level (top first) no
    more than any peer's, compared lexicographically; the largest gang bound no slower
    than the median peer. Says where not, and by how much."""
    if "phalanx" not in by or len(by) < 2:
        return []
    ours = by["phalanx"]["gangs"]
    peers = {name: run["gangs"] for name, run in by.items() if name != "phalanx"}
    lines, worse = [], 0
    for index, gang in enumerate(ours):
        mine = tuple(gang["domains_used"][k] for k in RATIO_LEVELS)
        for name, gangs in peers.items():
            theirs = tuple(gangs[index]["domains_used"][k] for k in RATIO_LEVELS)
            if mine > theirs:
                worse += 1
                lines.append(f"NOT MET: gang {gang['name']}: Phalanx used {mine} domains "
                             f"(layer 1, 2, 3), {name} {theirs}")
    if not worse:
        lines.append(f"Domains: Phalanx used no more domains than any of {sorted(peers)} "
                     f"for every gang (layer 1, 2, 3, lexicographically).")
    largest = max(range(len(ours)), key=lambda i: ours[i]["size"])
    median = statistics.median(g[largest]["time_to_all_bound_s"] for g in peers.values())
    mine_s = ours[largest]["time_to_all_bound_s"]
    verdict = "met" if mine_s <= median else f"NOT MET by {mine_s - median:.2f} s"
    lines.append(f"Largest gang ({ours[largest]['size']} pods), last pod to all bound: "
                 f"Phalanx {mine_s:.2f} s, median peer {median:.2f} s ({verdict}; "
                 + ", ".join(f"{n} {g[largest]['time_to_all_bound_s']:.2f} s"
                             for n, g in peers.items()) + ")")
    return lines


def bind_rates(by: dict[str, dict[str, Any]]) -> list[str]:
    """Each baseline's bind rate (first to last bind of a gang, seen by the watch; summed
    over the gangs) against Phalanx's, in the same run."""
    def rate(run: dict[str, Any]) -> float:
        return float(sum(g["size"] for g in run["gangs"])
                     / sum(g["first_to_last_bind_s"] for g in run["gangs"]))
    if "phalanx" not in by:
        return []
    ours = rate(by["phalanx"])
    return [f"binds/s over all gangs: phalanx {ours:.0f}, {name} {rate(run):.0f} "
            f"(phalanx {ours / rate(run):.2f}x)"
            for name, run in by.items() if name != "phalanx"]


def matches_optimum(gang: dict[str, Any]) -> bool:
    return all(gang["domains_used"][k] <= gang["optimum"][k]
               for k in gang["optimum"] if k != NODE_LEVEL)


if __name__ == "__main__":
    raise SystemExit(main())
