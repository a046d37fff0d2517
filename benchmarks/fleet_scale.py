"""Live fleet run (issue 17): the largest KWOK fleet this machine holds, with the seed's mix.

    .venv/bin/python -m benchmarks.fleet_scale --nodes N [--pretrain P] [--finetune F F]
        [--inference D] [--seed S] [--timeout SECONDS] [--out DIR]

Not part of `make test`: one fresh local control plane (`localcluster`, real etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok-controller) named
`phalanx-bench-fleet`, N synthetic p5 nodes (`topology.synthetic`, AWS topology labels,
8 GPUs each) created through the API with 64 client threads, then `phalanx run` (leader
election off, the default) beside the cluster's own kube-scheduler, and at one moment:

- one pre-training StatefulSet of P pods x 8 GPUs (podManagementPolicy Parallel,
  schedulerName phalanx): one gang of P (default 90 % of the nodes the fine-tunes leave);
- two fine-tuning StatefulSets of F pods x 8 GPUs each (Phalanx; default 5 % of the nodes);
- D inference replicas over four Deployments (1 CPU, 2 GiB, no accelerator, placed by
  kube-scheduler beside the gangs).

Why StatefulSets for the fine-tunes: a JobSet would need the JobSet controller's webhook
admitting 10,000 pods on the same two cores; the gang Phalanx sees is the same (one
owner, minMember = replicas).

Measured: node creation rate (per 5,000-node chunk, so a crawl shows) and time to all
schedulable; per workload creation -> all pods exist -> all bound, first-to-last bind
rate; Phalanx's solve and bind seconds per gang (its explain API) and its /metrics
histograms; Phalanx RSS (peak) and CPU-seconds; apiserver writes/s per phase (POST, PUT,
PATCH, DELETE deltas of `apiserver_request_total`); etcd DB size (total and in use, etcd's
own /metrics) and data-folder size; RSS and CPU of every control-plane process, sampled
every 5 s with the machine's CPU busy fraction and MemAvailable, so what ran out first
is read from evidence. Each step is bounded by `--timeout` (default 1,200 s): a step that
cannot finish in it is itself the finding, recorded, and the run ends there.

Flags that differ from localcluster's defaults, and why (a 2-core machine carrying a fleet
whose real control plane would be scaled out):

- `kwokctl create cluster --node-lease-duration-seconds 0`: KWOK keeps no node Leases. At
  100,000 nodes KWOK's default (40 s leases x heartbeat factor 5, renewed every quarter)
  is 100,000 Lease creates at start and 2,000 Lease PUTs/s after; with none, KWOK uses its
  lease-less `node-heartbeat` Stage (node status PATCH) instead.
- `kwokctl create cluster --heartbeat-factor 360`: kwokctl multiplies four settings by
  it: the node status update period (10 s -> 1 h, so the `node-heartbeat` Stage fires
  every 60-132 min: none during a bounded run; steady state would be 28 PATCH/s at
  100,000 nodes), and kube-controller-manager's `--node-monitor-grace-period` (40 s ->
  4 h) and `--node-monitor-period` (5 s -> 30 min), so the node-lifecycle controller does
  not declare unreachable nodes that heartbeat this slowly.
- kwok-controller `nodePlayStageParallelism: 32`, `podPlayStageParallelism: 32` (a
  KwokConfiguration document beside kwokctl's; KWOK's default is 4 each): with 4 Stage
  workers KWOK turned 10,000 new nodes Ready at ~22/s here (444 s for 10,000 while its
  own CPU stayed at 0.2 cores), each Ready PATCH waiting on the shared machine's latency.
- kube-apiserver `--disable-admission-plugins=TaintNodesByCondition`: that plugin taints
  every new node `node.kubernetes.io/not-ready:NoSchedule`, and kube-controller-manager
  lifts the taints with a fixed 8 node-update workers, one GET and PATCH each: 25 nodes/s
  on this shared machine (10,000 nodes Ready in 77 s, schedulable only after 455 s), i.e.
  over an hour for 100,000. Without it a node KWOK has made Ready is schedulable at once
  (the controller still taints a node it finds not Ready).
- etcd `--quota-backend-bytes` 16 GiB (localcluster: 8 GiB): every pod's revisions
  (create, bind, KWOK's status) stay until the apiserver's 5-minute compaction, and the
  DB file never shrinks without a defrag.
The run stops itself (and says so) if the machine's MemAvailable falls below 1.5 GB: the
machine is shared, and the OOM killer would pick someone's process.
Everything else as localcluster runs every test (etcd without fsync, raised in-flight
limits, no client QPS limits).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from benchmarks.kwok_placement import statefulset
from benchmarks.report import print_result
from kube import ApiError, KubeClient, Watcher
from kube.resources import NODES, PODS, STATEFULSETS
from localcluster.binaries import REPO
from localcluster.bulk import create_all, ensure_namespace
from localcluster.cluster import DEFAULT_WORKDIR, LocalCluster, node_ready
from localcluster.ports import free_port
from localcluster.synthnodes import schedulable
from topology.synthetic import SYNTHETIC_LABEL, ClusterSpec, synth_nodes

NAME = "phalanx-bench-fleet"
NS = "fleet"
HEARTBEAT_FACTOR = 360
ETCD_QUOTA = 16 << 30
KWOKCTL_ARGS = ("--node-lease-duration-seconds", "0", "--heartbeat-factor", str(HEARTBEAT_FACTOR))
ETCD_ARGS = {"quota-backend-bytes": str(ETCD_QUOTA)}
APISERVER_ARGS = {"disable-admission-plugins": "TaintNodesByCondition"}
MEMORY_FLOOR_MB = 1500
KWOK_OPTIONS = {"nodePlayStageParallelism": 32, "podPlayStageParallelism": 32}
CHUNK = 5000
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
              "kwok-controller")
INFERENCE_DEPLOYMENTS = 4


# -- processes -------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat (fields 14 and 15; the name may hold spaces)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def component_pids(cluster: LocalCluster) -> dict[str, int]:
    """Control-plane component -> pid, by the binary's name in its command line."""
    found: dict[str, int] = {}
    for pid in cluster.processes():
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            continue
        name = Path(argv0).name
        if name in COMPONENTS:
            found[name] = pid
    return found


class Exhausted(RuntimeError):
    """The machine ran out of a resource the run must not take from others."""


class Sampler:
    """Every `every` seconds: each process's CPU rate (cores) and RSS, the machine's busy
    fraction and MemAvailable, tagged with the run's current phase. The timeline is the
    evidence for what ran out first."""

    def __init__(self, pids: dict[str, int], every: float = 5.0) -> None:
        self.pids = dict(pids)
        self.every = every
        self.phase = "idle"
        self.timeline: list[dict[str, Any]] = []
        self.peak_rss_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self.exhausted = ""
        """Set (to the evidence) once MemAvailable fell below MEMORY_FLOOR_MB."""
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.started = time.monotonic()

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last_cpu: dict[str, float] = {}
        last_busy = _machine_busy()
        last_t = time.monotonic()
        while not self._stop.wait(self.every):
            now = time.monotonic()
            busy = _machine_busy()
            sample: dict[str, Any] = {
                "t": round(now - self.started, 1), "phase": self.phase,
                "machine_busy": round((busy[0] - last_busy[0]) / max(busy[1] - last_busy[1], 1),
                                      3),
                "mem_available_mb": round(_mem_available_mb()),
                "load1": float(Path("/proc/loadavg").read_text().split()[0]),
                "cores": {}, "rss_mb": {},
            }
            last_busy = busy
            for name, pid in list(self.pids.items()):
                try:
                    cpu = _cpu_seconds(pid)
                    rss = _status_mb(pid, "VmRSS")
                except (OSError, IndexError):
                    continue
                if name in last_cpu:
                    sample["cores"][name] = round((cpu - last_cpu[name]) / (now - last_t), 2)
                last_cpu[name] = cpu
                sample["rss_mb"][name] = round(rss)
                self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), rss)
            last_t = now
            self.timeline.append(sample)
            if sample["mem_available_mb"] < MEMORY_FLOOR_MB and not self.exhausted:
                self.exhausted = (f"memory: MemAvailable {sample['mem_available_mb']} MB at "
                                  f"{sample['t']} s ({self.phase}); RSS MB {sample['rss_mb']}")

    def check(self) -> None:
        """Ends the run when memory ran out (the shared machine must not reach the OOM
        killer)."""
        if self.exhausted:
            raise Exhausted(self.exhausted)

    def summary(self, phase: str) -> dict[str, Any]:
        """Mean cores per process and machine busy fraction over one phase's samples."""
        samples = [s for s in self.timeline if s["phase"] == phase]
        if not samples:
            return {}
        names = {n for s in samples for n in s["cores"]}
        return {
            "samples": len(samples),
            "machine_busy_mean": round(sum(s["machine_busy"] for s in samples) / len(samples),
                                       3),
            "mem_available_min_mb": min(s["mem_available_mb"] for s in samples),
            "cores_mean": {n: round(sum(s["cores"].get(n, 0.0) for s in samples)
                                    / len(samples), 2) for n in sorted(names)},
            "rss_max_mb": {n: max(s["rss_mb"].get(n, 0) for s in samples)
                           for n in sorted(names)},
        }


# -- metrics ---------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def _metric_sum(text: str, name: str, labels: dict[str, tuple[str, ...]] | None = None
                ) -> float:
    """Sum of one metric's samples whose labels take one of the given values."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if labels and any(found.get(k) not in v for k, v in labels.items()):
            continue
        total += float(match.group(3))
    return total


def apiserver_writes(kube: KubeClient) -> float:
    reply = kube.request("GET", "/metrics", timeout=60)
    text = reply.data.decode() if hasattr(reply, "data") else ""
    return _metric_sum(text, "apiserver_request_total", {"verb": WRITE_VERBS})


def etcd_url(cluster: LocalCluster) -> str | None:
    for pid in cluster.processes():
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        match = re.search(r"--listen-client-urls=http://[^:]+:(\d+)", cmd)
        if match and "etcd" in Path(cmd.split("\0", 1)[0]).name:
            return f"http://127.0.0.1:{match.group(1)}"
    return None


def etcd_state(cluster: LocalCluster) -> dict[str, Any]:
    """etcd's own DB size (file, and in use), key count, and the data folder on disk."""
    state: dict[str, Any] = {}
    url = etcd_url(cluster)
    if url:
        try:
            text = httpx.get(f"{url}/metrics", timeout=30).text
            state["db_total_mb"] = round(_metric_sum(text, "etcd_mvcc_db_total_size_in_bytes")
                                         / 2**20, 1)
            state["db_in_use_mb"] = round(
                _metric_sum(text, "etcd_mvcc_db_total_size_in_use_in_bytes") / 2**20, 1)
            state["keys"] = int(_metric_sum(text, "etcd_debugging_mvcc_keys_total"))
            state["quota_mb"] = round(_metric_sum(text, "etcd_server_quota_backend_bytes")
                                      / 2**20)
        except httpx.HTTPError as exc:
            state["error"] = str(exc)
    folder = cluster.cluster_dir / "etcd"
    state["data_dir_mb"] = round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                                 / 2**20, 1) if folder.is_dir() else None
    return state


# -- watches ---------------------------------------------------------------------------
class NodeCount:
    """Synthetic nodes Ready (KWOK's part) and schedulable (Ready and the node-lifecycle
    controller's taints gone), kept by one watch: which of the two lags shows who limits."""

    def __init__(self) -> None:
        self.ok: set[str] = set()
        self.ready: set[str] = set()
        self.lock = threading.Lock()

    def replace(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.event("ADDED", item)

    def event(self, kind: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        with self.lock:
            for found, holds in ((self.ok, schedulable(node)), (self.ready, node_ready(node))):
                if kind != "DELETED" and holds:
                    found.add(name)
                else:
                    found.discard(name)

    def count(self) -> int:
        with self.lock:
            return len(self.ok)

    def ready_count(self) -> int:
        with self.lock:
            return len(self.ready)


@dataclass
class AppTimes:
    """One workload's pods as seen through one pod watch (one clock)."""

    seen: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)


class PodTracker:
    def __init__(self) -> None:
        self.apps: dict[str, AppTimes] = {}
        self.lock = threading.Lock()

    def replace(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.event("ADDED", item)

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        now = time.monotonic()
        meta = pod["metadata"]
        app = (meta.get("labels") or {}).get("app")
        if not app:
            return
        with self.lock:
            times = self.apps.setdefault(app, AppTimes())
            times.seen.setdefault(meta["uid"], now)
            if (pod.get("spec") or {}).get("nodeName") and meta["uid"] not in times.bound:
                times.bound[meta["uid"]] = now

    def counts(self, app: str) -> tuple[int, int]:
        with self.lock:
            times = self.apps.get(app)
            return (len(times.seen), len(times.bound)) if times else (0, 0)

    def times(self, app: str) -> AppTimes:
        with self.lock:
            times = self.apps.get(app, AppTimes())
            return AppTimes(dict(times.seen), dict(times.bound))


# -- workloads -------------------------------------------------------------------------
def inference_deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [
                                      {"name": "serve", "image": "server", "resources": {
                                          "requests": {"cpu": "1", "memory": "2Gi"}}}]}}}}


@dataclass
class Workload:
    name: str
    kind: str
    replicas: int
    scheduler: str
    created: float = 0.0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate: Callable[[], bool], deadline: float, interval: float = 1.0) -> bool:
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def other_clusters(workdir: Path = DEFAULT_WORKDIR) -> list[str]:
    """Other local clusters on this machine: folders, or any running kube-apiserver."""
    folders = workdir / "clusters"
    names = [p.name for p in folders.iterdir() if p.name != NAME] if folders.is_dir() else []
    found = subprocess.run(["pgrep", "-af", "kube-apiserver"], capture_output=True, text=True)
    for line in found.stdout.splitlines():
        match = re.search(r"clusters/([^/]+)/", line)
        if match and match.group(1) != NAME and match.group(1) not in names:
            names.append(match.group(1))
    return names


# -- the run ---------------------------------------------------------------------------
class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.report: dict[str, Any] = {"benchmark": "fleet_scale", "nodes_asked": args.nodes,
                                       "seed": args.seed, "phases": {}, "workloads": []}
        self.cluster = LocalCluster(name=NAME, kwokctl_args=KWOKCTL_ARGS,
                                    extra_args={"etcd": dict(ETCD_ARGS),
                                                "kube-apiserver": dict(APISERVER_ARGS)},
                                    kwok_options=dict(KWOK_OPTIONS))
        self.phalanx: subprocess.Popen[bytes] | None = None
        self.watchers: list[Watcher] = []
        self.sampler: Sampler | None = None
        self.explain = ""
        self.writes0 = 0.0
        self.phase_t0 = 0.0

    def phase(self, kube: KubeClient, name: str | None, outcome: dict[str, Any]) -> None:
        """Closes the current phase (its apiserver write rate, process summary) and opens
        `name`."""
        now = time.monotonic()
        writes = apiserver_writes(kube)
        assert self.sampler is not None
        if self.sampler.phase != "idle":
            seconds = now - self.phase_t0
            outcome.update(seconds=round(seconds, 1),
                           apiserver_writes=int(writes - self.writes0),
                           apiserver_writes_per_s=round((writes - self.writes0) / seconds, 1),
                           etcd=etcd_state(self.cluster),
                           processes=self.sampler.summary(self.sampler.phase))
            self.report["phases"][self.sampler.phase] = outcome
            print(f"[fleet] phase {self.sampler.phase}: {json.dumps(outcome)[:600]}",
                  file=sys.stderr, flush=True)
        self.writes0, self.phase_t0 = writes, now
        self.sampler.phase = name or "done"

    def execute(self) -> None:
        args = self.args
        started = time.monotonic()
        self.cluster.down()
        self.cluster.up(timeout=300)
        self.report["control_plane_up_s"] = round(time.monotonic() - started, 1)
        kube = self.cluster.kube()
        self.report["kubernetes"] = kube.get("/version")["gitVersion"]
        self.sampler = Sampler(component_pids(self.cluster)).start()
        self.sampler.add("bench", os.getpid())
        deadline = time.monotonic() + args.timeout

        # Nodes: chunks of 5,000, so the rate's evolution (a crawl) shows.
        nodes = synth_nodes(ClusterSpec(nodes=args.nodes, seed=args.seed))
        counter = NodeCount()
        self.watchers.append(Watcher(
            kube, NODES.path(), name="fleet-nodes", on_replace=counter.replace,
            on_event=counter.event, query={"labelSelector": f"{SYNTHETIC_LABEL}=true"}).start())
        self.phase(kube, "nodes", {})
        created, chunks = 0, []
        t0 = time.monotonic()
        for start in range(0, len(nodes), CHUNK):
            chunk = nodes[start:start + CHUNK]
            done = create_all(kube, chunk, concurrency=args.concurrency)
            created += done.created + done.existed
            chunks.append(round(done.per_second, 1))
            print(f"[fleet] {created} nodes at {done.per_second:.0f}/s "
                  f"({time.monotonic() - t0:.0f}s, {counter.ready_count()} Ready, "
                  f"{counter.count()} schedulable)",
                  file=sys.stderr, flush=True)
            self.sampler.check()
            if time.monotonic() > deadline:
                break
        create_s = time.monotonic() - t0
        ready_s: float | None = None
        last_print = time.monotonic()

        def all_schedulable() -> bool:
            nonlocal ready_s, last_print
            assert self.sampler is not None
            self.sampler.check()
            if ready_s is None and counter.ready_count() >= created:
                ready_s = time.monotonic() - t0
            if time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                print(f"[fleet] {time.monotonic() - t0:.0f}s: {counter.ready_count()} Ready, "
                      f"{counter.count()} schedulable", file=sys.stderr, flush=True)
            return counter.count() >= created

        all_ready = _wait(all_schedulable, deadline + 120, 1.0)
        schedulable_s = time.monotonic() - t0
        self.phase(kube, "scheduler-start", {
            "created": created, "create_s": round(create_s, 1),
            "nodes_per_s": round(created / create_s, 1), "chunk_rates": chunks,
            "ready": counter.ready_count(), "schedulable": counter.count(),
            "all_ready_s": round(ready_s, 1) if ready_s is not None else None,
            "all_schedulable_s": round(schedulable_s, 1),
            "finished": created == len(nodes) and all_ready})
        self.report["nodes_created"] = created
        if created < len(nodes) or not all_ready:
            self.report["stopped"] = (f"nodes: {created} of {len(nodes)} created, "
                                      f"{counter.count()} schedulable within --timeout")
            return

        # Phalanx, ready once its caches hold the fleet.
        self.explain = f"http://127.0.0.1:{free_port()}"
        log = open(Path(args.out) / f"fleet-{args.stamp}-phalanx.log", "wb")  # noqa: SIM115
        t0 = time.monotonic()
        self.phalanx = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig",
             str(self.cluster.kubeconfig), "--http-address",
             self.explain.removeprefix("http://")], stdout=log, stderr=subprocess.STDOUT)
        self.sampler.add("phalanx", self.phalanx.pid)
        cpu0 = _cpu_seconds(self.phalanx.pid)
        if not _wait(lambda: _ready(self.explain), time.monotonic() + args.timeout, 1.0):
            self.report["stopped"] = "phalanx not ready within --timeout"
            return
        self.report["phalanx_ready_s"] = round(time.monotonic() - t0, 1)
        self.report["phalanx_startup_cpu_s"] = round(_cpu_seconds(self.phalanx.pid) - cpu0, 1)

        # The mix, all created at one moment.
        ensure_namespace(kube, NS)
        pods = PodTracker()
        self.watchers.append(Watcher(kube, PODS.path(NS), name="fleet-pods",
                                     on_replace=pods.replace, on_event=pods.event).start())
        self.watchers[-1].synced.wait(60)
        workloads = [Workload("pretrain", "StatefulSet", args.pretrain, "phalanx")]
        workloads += [Workload(f"finetune-{i}", "StatefulSet", size, "phalanx")
                      for i, size in enumerate(args.finetune)]
        per = -(-args.inference // INFERENCE_DEPLOYMENTS) if args.inference else 0
        left = args.inference
        for i in range(INFERENCE_DEPLOYMENTS):
            if left > 0:
                workloads.append(Workload(f"inference-{i}", "Deployment", min(per, left),
                                          "default-scheduler"))
                left -= min(per, left)
        self.phase(kube, "workloads", {})
        cpu_workloads0 = _cpu_seconds(self.phalanx.pid)
        deadline = time.monotonic() + args.timeout
        for w in workloads:
            if w.kind == "StatefulSet":
                kube.create(STATEFULSETS.path(NS),
                            statefulset(w.name, w.replicas, "phalanx", 8, namespace=NS))
            else:
                kube.create(f"/apis/apps/v1/namespaces/{NS}/deployments",
                            inference_deployment(w.name, w.replicas))
            w.created = time.monotonic()
        last_print = 0.0

        def all_bound() -> bool:
            nonlocal last_print
            assert self.sampler is not None
            self.sampler.check()
            state = {w.name: pods.counts(w.name) for w in workloads}
            if time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                print(f"[fleet] {time.monotonic() - workloads[0].created:.0f}s (exist, bound): "
                      f"{state}", file=sys.stderr, flush=True)
            return all(state[w.name][1] >= w.replicas for w in workloads)

        try:
            finished = _wait(all_bound, deadline, 1.0)
        except Exhausted as exc:  # what was bound so far is still the run's evidence
            finished, self.report["stopped"] = False, str(exc)
        phalanx_cpu = _cpu_seconds(self.phalanx.pid) - cpu_workloads0
        time.sleep(1.0)
        for w in workloads:
            self.report["workloads"].append(self._workload_result(w, pods))
        self.report["phalanx"] = {
            "cpu_s_workloads": round(phalanx_cpu, 1),
            "cpu_s_total": round(_cpu_seconds(self.phalanx.pid), 1),
            "rss_mb": round(_status_mb(self.phalanx.pid, "VmRSS")),
            "peak_rss_mb": round(_status_mb(self.phalanx.pid, "VmHWM")),
            "metrics": self._phalanx_metrics()}
        self.phase(kube, None, {"finished": finished})
        if not finished and "stopped" not in self.report:
            self.report["stopped"] = "workloads not all bound within --timeout"

    def _workload_result(self, w: Workload, pods: PodTracker) -> dict[str, Any]:
        times = pods.times(w.name)
        seen, bound = sorted(times.seen.values()), sorted(times.bound.values())
        result: dict[str, Any] = {"name": w.name, "kind": w.kind, "replicas": w.replicas,
                                  "scheduler": w.scheduler, "pods_seen": len(seen),
                                  "pods_bound": len(bound)}
        if len(seen) >= w.replicas:
            result["created_to_all_exist_s"] = round(seen[w.replicas - 1] - w.created, 1)
        if bound:
            spread = bound[-1] - bound[0]
            result["created_to_first_bound_s"] = round(bound[0] - w.created, 1)
            result["first_to_last_bind_s"] = round(spread, 1)
            result["binds_per_s_watch"] = round(len(bound) / spread, 1) if spread > 0 else None
        if len(bound) >= w.replicas:
            result["created_to_all_bound_s"] = round(bound[-1] - w.created, 1)
        if w.scheduler == "phalanx" and self.explain:
            try:
                detail = httpx.get(f"{self.explain}/v1/groups/{NS}/{w.name}", timeout=60,
                                   params={"kind": w.kind}).json()
                result["solve_s"] = detail.get("solve_s")
                result["bind_s"] = detail.get("bind_s")
                if result["bind_s"]:
                    result["binds_per_s_phalanx"] = round(w.replicas / result["bind_s"], 1)
                result["state"] = detail.get("state")
            except (httpx.HTTPError, ValueError) as exc:
                result["explain_error"] = str(exc)
        return result

    def _phalanx_metrics(self) -> dict[str, float]:
        try:
            text = httpx.get(f"{self.explain}/metrics", timeout=60).text
        except httpx.HTTPError:
            return {}
        return {key: round(_metric_sum(text, key), 3) for key in (
            "phalanx_solve_seconds_sum", "phalanx_solve_seconds_count",
            "phalanx_bind_seconds_sum", "phalanx_bind_seconds_count",
            "phalanx_pods_bound_total")}

    def teardown(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        if self.sampler is not None:
            self.sampler.stop()
            self.report["peak_rss_mb"] = {k: round(v) for k, v in
                                          self.sampler.peak_rss_mb.items()}
            self.report["timeline"] = self.sampler.timeline
        if self.phalanx is not None and self.phalanx.poll() is None:
            self.phalanx.terminate()
            try:
                self.phalanx.wait(30)
            except subprocess.TimeoutExpired:
                self.phalanx.kill()
                self.phalanx.wait(10)
        self.cluster.down()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def render(report: dict[str, Any]) -> str:
    """The tables RESULTS.md records."""
    lines = [f"nodes {report.get('nodes_created')} / {report['nodes_asked']}; "
             f"stopped: {report.get('stopped', 'no')}",
             "| phase | s | apiserver writes/s | machine busy | apiserver cores | etcd cores | "
             "kwok cores | kcm cores | phalanx cores | etcd DB MB (in use) | "
             "apiserver/etcd/kwok RSS MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, phase in report["phases"].items():
        proc = phase.get("processes") or {}
        cores, rss, etcd = proc.get("cores_mean", {}), proc.get("rss_max_mb", {}), phase["etcd"]
        lines.append(
            f"| {name} | {phase['seconds']} | {phase['apiserver_writes_per_s']} | "
            f"{proc.get('machine_busy_mean')} | {cores.get('kube-apiserver')} | "
            f"{cores.get('etcd')} | {cores.get('kwok-controller')} | "
            f"{cores.get('kube-controller-manager')} | {cores.get('phalanx')} | "
            f"{etcd.get('db_total_mb')} ({etcd.get('db_in_use_mb')}) | "
            f"{rss.get('kube-apiserver')}/{rss.get('etcd')}/{rss.get('kwok-controller')} |")
    lines += ["", "| workload | pods | scheduler | created to all exist | created to all bound | "
              "first to last bind | binds/s (watch) | solve s | bind s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for w in report["workloads"]:
        lines.append(f"| {w['name']} | {w['replicas']} | {w['scheduler']} | "
                     f"{w.get('created_to_all_exist_s')} | {w.get('created_to_all_bound_s')} | "
                     f"{w.get('first_to_last_bind_s')} | {w.get('binds_per_s_watch')} | "
                     f"{w.get('solve_s')} | {w.get('bind_s')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--pretrain", type=int, default=None,
                        help="pre-training pods (default: 90 %% of the nodes the fine-tunes "
                             "leave)")
    parser.add_argument("--finetune", type=int, nargs=2, default=None, metavar="F",
                        help="the two fine-tuning gangs' sizes (default: 5 %% of the nodes each)")
    parser.add_argument("--inference", type=int, default=400,
                        help="inference replicas (four Deployments, kube-scheduler)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--timeout", type=float, default=1200,
                        help="seconds allowed for each step (nodes; Phalanx ready; workloads)")
    parser.add_argument("--concurrency", type=int, default=64, help="node-creating threads")
    parser.add_argument("--wait-for-others", type=float, default=1200,
                        help="above 10,000 nodes, wait up to this long (polling every 60 s) "
                             "for other local clusters to go; then run beside them (the "
                             "report names them)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    args = parser.parse_args(argv)
    if args.finetune is None:
        args.finetune = [args.nodes // 20] * 2
    if args.pretrain is None:
        args.pretrain = int(0.9 * (args.nodes - sum(args.finetune)))
    if args.pretrain + sum(args.finetune) > args.nodes:
        parser.error("the gangs need more nodes than --nodes (one 8-GPU pod per node)")
    args.stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.nodes > 10_000:
        waited = time.monotonic()
        while other_clusters() and time.monotonic() - waited < args.wait_for_others:
            print(f"[fleet] waiting for other clusters: {other_clusters()}", file=sys.stderr,
                  flush=True)
            time.sleep(60)
        shared = other_clusters()
        if shared:  # waited long enough: run beside them, and say so in the report
            print(f"[fleet] other clusters still up after {args.wait_for_others:.0f}s: "
                  f"{shared}; running beside them", file=sys.stderr, flush=True)
    else:
        shared = []
    signal.signal(signal.SIGTERM, _on_sigterm)
    run = Run(args)
    run.report["other_clusters_at_start"] = shared
    run.report.update(pretrain=args.pretrain, finetune=args.finetune,
                      inference=args.inference, kwokctl_args=list(KWOKCTL_ARGS),
                      etcd_args=ETCD_ARGS, date=time.strftime("%Y-%m-%d %H:%M UTC",
                                                              time.gmtime()))
    wall = time.monotonic()
    try:
        run.execute()
    except Exhausted as exc:
        run.report["stopped"] = str(exc)
    except (ApiError, OSError, TimeoutError) as exc:
        run.report["stopped"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run.report["duration_s"] = round(time.monotonic() - wall, 1)
        try:
            run.teardown()
        finally:
            path = out / f"fleet-{args.stamp}.json"
            path.write_text(json.dumps(run.report, indent=2))
            print(render(run.report))
            print_result({"json": str(path), "nodes": run.report.get("nodes_created"),
                          "stopped": run.report.get("stopped"),
                          "duration_s": run.report["duration_s"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
