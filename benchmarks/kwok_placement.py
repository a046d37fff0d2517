"""KWOK placement benchmark: the same workload through Phalanx and kube-scheduler.

    .venv/bin/python -m benchmarks.kwok_placement [--nodes 5000] [--quick] [--out DIR]
        [--workload statefulset|jobset]

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

Baselines, all on the same cluster: kube-scheduler v1.36 with its default plugins (the
cluster's own, client QPS limits lifted), and the same kube-scheduler with its in-tree
gang scheduling (GangScheduling plugin, alpha: feature gates GenericWorkload and
GangScheduling, a scheduling.k8s.io/v1alpha2 PodGroup per gang). The scheduler-plugins
Coscheduling plugin cannot be built here: the Go module proxy serves no version of
`sigs.k8s.io/scheduler-plugins` (none listed; v0.35.0 refused), so it is reported as
unavailable rather than dropped silently.

Writes `placement-<time>.json`, and PNG plots, to `--out` (default benchmarks/out).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.podwatch import PodTimes, watch_pods
from benchmarks.report import print_result
from kube import ApiError, KubeClient
from kube.resources import (
    CONFIG_MAPS,
    JOBSETS,
    NATIVE_POD_GROUPS,
    NODES,
    PODS,
    STATEFULSETS,
)
from localcluster.binaries import REPO
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
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
COSCHEDULING = ("not built: the Go module proxy lists no version of "
                "sigs.k8s.io/scheduler-plugins and refused v0.35.0, so the wrapper module "
                "cannot resolve it on this machine")
SCHEDULERS = {"phalanx": "phalanx", "kube-scheduler": "default-scheduler",
              "kube-scheduler-gang": "default-scheduler"}
# kube-scheduler's own gang scheduling (KEP-4671, alpha in 1.35/1.36): a PodGroup
# (scheduling.k8s.io/v1alpha2, gang minCount) per gang, pods naming it in
# spec.schedulingGroup; the GangScheduling plugin then admits the group all or nothing.
# localcluster serves that API and enables those gates on every cluster.
POD_GROUPS = NATIVE_POD_GROUPS.path(NS)


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


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (the fields after the command
    name, which may hold spaces: utime and stime are the 14th and 15th)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_thousand(cpu_s: float, binds: int) -> float | None:
    return round(1000 * cpu_s / binds, 3) if binds else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_gang(kube: KubeClient, times: PodTimes, name: str, size: int, scheduler: str,
              explain: str | None, gang_api: bool, slice_pods: int = 0,
              pid: int | None = None) -> tuple[GangRun, dict[str, int]]:
    """One gang: a StatefulSet, or (`slice_pods`) an exclusive-topology JobSet."""
    workload = (_jobset(name, size, scheduler, slice_pods) if slice_pods else
                statefulset(name, size, scheduler, 8, name if gang_api else None))
    before = _snapshot(kube)
    # The optimum of the same pods as one gang: the PodGroup (minCount = size) would make
    # `phalanx place` name the gang after the PodGroup, not the StatefulSet it reads.
    solo = statefulset(name, size, scheduler, 8) if gang_api else workload
    offline = solve(request_from_workload(solo), before, SolverConfig(time_limit_s=5.0))
    assert isinstance(offline, Placement), f"{name} cannot fit: {offline.to_json()}"
    if gang_api:
        kube.create(POD_GROUPS, {"apiVersion": "scheduling.k8s.io/v1alpha2",
                                 "kind": "PodGroup", "metadata": {"name": name},
                                 "spec": {"schedulingPolicy": {"gang": {"minCount": size}}}})
    cpu0 = process_cpu_seconds(pid) if pid else 0.0
    created = time.monotonic()
    kube.create((JOBSETS if slice_pods else STATEFULSETS).path(NS), workload)
    def done() -> bool:
        pods = _pods(kube, name)
        return len(pods) == size and all(p["spec"].get("nodeName") for p in pods)
    wait_until(done, 600, f"{name} bound", interval=0.1)
    cpu = process_cpu_seconds(pid) - cpu0 if pid else None
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
                  cpu_s_per_1000_binds=_per_thousand(cpu, size) if cpu is not None else None)
    if explain:
        detail = httpx.get(f"{explain}/v1/groups/{NS}/{name}", timeout=30,
                           params={"kind": "JobSet" if slice_pods else "StatefulSet"}).json()
        run.solve_s, run.bind_s = detail.get("solve_s"), detail.get("bind_s")
    level = tree.levels.index(LAYER3)
    racks: dict[str, int] = {}
    for a in assignments:
        path = render_path(tree.paths[level][int(tree.domain_of[level][tree.index[a.node]])])
        racks[path] = racks.get(path, 0) + 1
    return run, racks


def start_phalanx(cluster: LocalCluster) -> tuple[subprocess.Popen[bytes], str]:
    """`phalanx run` on the cluster, ready; and its explain API's URL."""
    explain = f"http://127.0.0.1:{_free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig",
         str(cluster.kubeconfig), "--http-address", explain.removeprefix("http://")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _ready(explain), 60, "phalanx ready")
    return process, explain


def run_scheduler(kube: KubeClient, cluster: LocalCluster, scheduler: str,
                  sizes: list[int], cpu_pods: int, slice_pods: int = 0) -> SchedulerRun:
    result = SchedulerRun(scheduler)
    process, explain = None, None
    if scheduler == "phalanx":
        process, explain = start_phalanx(cluster)
        pid = process.pid
    else:
        pid = next(p for p in cluster.processes()
                   if "kube-scheduler" in Path(f"/proc/{p}/cmdline").read_text())
    times, watcher = watch_pods(kube, NS)
    started, cpu0 = time.monotonic(), process_cpu_seconds(pid)
    try:
        if cpu_pods:
            kube.create(STATEFULSETS.path(NS),
                        statefulset("cpu", cpu_pods, SCHEDULERS[scheduler], 0))
            t0 = time.monotonic()
            wait_until(lambda: sum(1 for p in _pods(kube, "cpu") if p["spec"].get("nodeName"))
                       == cpu_pods, 300, "CPU pods bound", interval=0.1)
            result.cpu_pods_bound_s = round(time.monotonic() - t0, 3)
        largest = max(sizes)
        for index, size in enumerate(sizes):
            run, racks = _run_gang(kube, times, f"g{index}-{size}", size, SCHEDULERS[scheduler],
                                   explain, scheduler == "kube-scheduler-gang", slice_pods, pid)
            result.gangs.append(run)
            if size == largest:
                result.placement = racks
        elapsed = time.monotonic() - started
        result.pods_per_s = round((sum(sizes) + cpu_pods) / elapsed, 1)
        result.cpu_s = round(process_cpu_seconds(pid) - cpu0, 3)
        result.cpu_s_per_1000_binds = _per_thousand(result.cpu_s, sum(sizes) + cpu_pods)
        result.peak_rss_mb = _vm_hwm_mb(pid)
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
    return result


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


def _clear(kube: KubeClient) -> None:
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
    try:
        for group in kube.list_all(POD_GROUPS)[0]:
            kube.delete(f"{POD_GROUPS}/{group['metadata']['name']}")
    except ApiError as exc:
        if exc.status != 404:  # the v1alpha2 API is served only with the gang baseline
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
                        help="any of phalanx, kube-scheduler, kube-scheduler-gang")
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
    unknown = sorted(set(schedulers) - set(SCHEDULERS))
    if unknown:
        parser.error(f"--schedulers: unknown {unknown}; expected some of {sorted(SCHEDULERS)}")
    slice_pods = args.slice_pods if args.workload == "jobset" else 0
    if slice_pods:
        if "kube-scheduler-gang" in schedulers:
            parser.error("--workload jobset: kube-scheduler-gang needs pods naming a PodGroup, "
                         "which JobSet does not create; use phalanx,kube-scheduler")
        if any(size % slice_pods for size in sizes):
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
            runs.append(run_scheduler(kube, cluster, scheduler, sizes, args.cpu_pods,
                                      slice_pods))
            bad = overcommitted(kube)
            if bad:
                raise SystemExit(f"{scheduler}: over-committed nodes: {bad[:10]}")
            _clear(kube)
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
        "coscheduling": COSCHEDULING, "duration_s": round(time.monotonic() - wall, 1),
        "runs": [run.__dict__ | {"gangs": [g.__dict__ for g in run.gangs]} for run in runs],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"placement-{stamp}.json").write_text(json.dumps(report, indent=2))
    from benchmarks.placement_plots import plot_all

    pngs = plot_all(report, out, stamp)
    print(render(report))
    print_result({"json": str(out / f"placement-{stamp}.json"), "plots": [str(p) for p in pngs],
                  "duration_s": report["duration_s"]})
    return 0


def render(report: dict[str, Any]) -> str:
    """The markdown table RESULTS.md records."""
    layer3 = PRESETS["aws"].keys[3]
    lines = ["| scheduler | gang | created to all bound | last pod to all bound | binds/s | "
             "CPU s / 1,000 binds | layer-3 used (optimum, lower bound) | layer-2 used "
             "(optimum) | every level at the optimum | ring hops | max distance |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    layer2 = PRESETS["aws"].keys[2]
    for run in report["runs"]:
        for g in run["gangs"]:
            lines.append(
                f"| {run['scheduler']} | {g['size']} | {g['create_to_all_bound_s']:.2f} s | "
                f"{g['time_to_all_bound_s']:.2f} s | "
                f"{g['bind_pods_per_s']:.0f} | {g.get('cpu_s_per_1000_binds')} | "
                f"{g['domains_used'][layer3]} "
                f"({g['optimum'][layer3]}, {g['lower_bound'][layer3]}) | "
                f"{g['domains_used'][layer2]} ({g['optimum'][layer2]}) | "
                f"{'yes' if matches_optimum(g) else 'no'} | {g['ring_hops']} | "
                f"{g['max_distance']} |")
    by = {run["scheduler"]: run for run in report["runs"]}
    if "phalanx" in by and "kube-scheduler" in by:
        ratios = [k["domains_used"][layer3] / p["domains_used"][layer3]
                  for p, k in zip(by["phalanx"]["gangs"], by["kube-scheduler"]["gangs"],
                                  strict=True)]
        lines.append(f"\nkube-scheduler spread the same gangs over {min(ratios):.1f}-"
                     f"{max(ratios):.1f}x (median {statistics.median(ratios):.1f}x) as many "
                     f"layer-3 domains as Phalanx.")
    for run in report["runs"]:
        lines.append(f"{run['scheduler']}: {run['pods_per_s']} pods/s overall, peak RSS "
                     f"{run['peak_rss_mb']} MB, CPU pods bound in {run['cpu_pods_bound_s']} s, "
                     f"unschedulable {run['unschedulable_s']:.1f} s, CPU {run.get('cpu_s')} s "
                     f"({run.get('cpu_s_per_1000_binds')} s per 1,000 binds)")
    lines += bind_rates(by)
    lines.append(f"API server write ceiling (same run): {report['apiserver_write_ceiling']}/s; "
                 f"Coscheduling: {report['coscheduling']}")
    return "\n".join(lines)


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
