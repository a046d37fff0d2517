"""Scheduler RSS across API-server restarts (re-lists), two builds side by side.

The hour-long soak saw one `phalanx run` step up 80-170 MiB at API-server restarts whose
recovery took 20-30 s (403s while RBAC re-synced, 429 "storage is (re)initializing"),
and stay there. This benchmark repeats that on purpose: a KWOK cluster with nodes and
bound pods, two schedulers under different schedulerNames (a `--base` git ref checked
out in a worktree, and this working tree), both busy with a stream of gangs (Kueue
plain-pod groups: pods only, no controller needed) and both authenticated as a
ServiceAccount (so a restarted API server refuses them until its RBAC cache is back, as
it refuses a real deployment). The API server is killed and restarted every
`--every` seconds; each process's RSS is sampled every second.

    python -m benchmarks.relist_memory --base HEAD --restarts 6

prints a table and, last, one JSON object: per build, RSS after warm-up, after each
restart (the settled value before the next one) and its growth.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.soak.replicas import account_token, token_kubeconfig, upstream_port
from kube.resources import NODES, PODS
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.ports import free_port
from localcluster.synthnodes import schedulable
from topology.synthetic import ClusterSpec, synth_nodes

REPO = Path(__file__).resolve().parents[1]
NS = "relist"
ACCOUNT_NS = "relist-system"


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _background(names: list[str], count: int) -> list[dict[str, Any]]:
    """Bound, running pods of no scheduler's: what the cache holds between gangs."""
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"bg-{i}", "namespace": NS,
                          "labels": {"app": f"bg-{i // 64}"}},
             "spec": {"nodeName": names[i % len(names)],
                      "containers": [{"name": "c", "image": "busybox", "resources": {
                          "requests": {"cpu": "100m", "memory": "64Mi"}}}]}}
            for i in range(count)]


def _gang(name: str, scheduler: str, size: int) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{name}-{i}", "namespace": NS,
                          "labels": {"kueue.x-k8s.io/pod-group-name": name,
                                     "kueue.x-k8s.io/pod-group-pod-index": str(i)},
                          "annotations": {"kueue.x-k8s.io/pod-group-total-count": str(size)}},
             "spec": {"schedulerName": scheduler,
                      "containers": [{"name": "c", "image": "busybox", "resources": {
                          "requests": {"cpu": "1", "nvidia.com/gpu": "1"},
                          "limits": {"nvidia.com/gpu": "1"}}}]}}
            for i in range(size)]


class Gangs:
    """A gang every `interval` s for each scheduler in turn, deleted after `life` s."""

    def __init__(self, kube: Any, schedulers: list[str], size: int,
                 interval: float = 1.0, life: float = 30.0) -> None:
        self.kube, self.schedulers, self.size = kube, schedulers, size
        self.interval, self.life = interval, life
        self.stopped = threading.Event()
        self.created = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        alive: list[tuple[float, list[str]]] = []
        while not self.stopped.wait(self.interval):
            name = f"g{self.created:05d}"
            pods = _gang(name, self.schedulers[self.created % len(self.schedulers)],
                         self.size)
            with contextlib.suppress(Exception):  # the API server is down now and then
                create_all(self.kube, pods, concurrency=8)
                alive.append((time.monotonic(), [p["metadata"]["name"] for p in pods]))
            self.created += 1
            while alive and time.monotonic() - alive[0][0] > self.life:
                _, names = alive.pop(0)
                for pod in names:
                    with contextlib.suppress(Exception):
                        self.kube.delete(PODS.path(NS, pod))


def _start(root: Path, kubeconfig: Path, name: str, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / f"{name}.yaml"
    config.write_text(f"schedulerName: {name}\nleaderElection: {{enabled: false}}\n")
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "run", "--kubeconfig", str(kubeconfig),
         "--config", str(config), "--http-address", f"127.0.0.1:{free_port()}"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git ref of the build compared")
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--pods", type=int, default=6000, help="bound background pods")
    parser.add_argument("--gang-size", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=6)
    parser.add_argument("--every", type=float, default=60.0, help="s between restarts")
    parser.add_argument("--downtime", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=90.0)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="relist-memory-"))
    base_root = workdir / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base_root), args.base],
                   cwd=REPO, check=True, capture_output=True)
    cluster = LocalCluster.for_this_process("relist")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    gangs: Gangs | None = None
    samples: dict[str, list[tuple[float, int]]] = {"base": [], "candidate": []}
    marks: list[tuple[float, float]] = []
    try:
        cluster.up(timeout=300)
        kube = cluster.kube()
        nodes = synth_nodes(ClusterSpec(nodes=args.nodes, seed=1))
        create_all(kube, nodes)
        wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0] if schedulable(n))
                   >= args.nodes, 300, f"{args.nodes} nodes Ready", interval=2)
        ensure_namespace(kube, NS)
        create_all(kube, _background([n["metadata"]["name"] for n in nodes], args.pods))
        ensure_namespace(kube, ACCOUNT_NS)
        token = account_token(kube, ACCOUNT_NS, "relist-phalanx", 86400)
        port = upstream_port(cluster.kubeconfig)
        kubeconfig = token_kubeconfig(cluster.kubeconfig, token, port,
                                      workdir / "scheduler.kubeconfig")
        processes = {"base": _start(base_root, kubeconfig, "phalanx-base", workdir),
                     "candidate": _start(REPO, kubeconfig, "phalanx-candidate", workdir)}
        gangs = Gangs(kube, ["phalanx-base", "phalanx-candidate"], args.gang_size)
        gangs.thread.start()
        t0 = time.monotonic()
        plan = [args.warmup + i * args.every for i in range(args.restarts)]
        end = args.warmup + args.restarts * args.every
        while (now := time.monotonic() - t0) < end:
            for build, process in processes.items():
                samples[build].append((now, _rss_kib(process.pid)))
            if plan and now >= plan[0]:
                plan.pop(0)
                started = time.monotonic() - t0
                cluster.restart_component("kube-apiserver", downtime_s=args.downtime)
                marks.append((started, time.monotonic() - t0))
                print(f"[{started:6.0f}s] apiserver restarted, serving after "
                      f"{marks[-1][1] - started:.1f}s", flush=True)
            time.sleep(1.0)
    finally:
        if gangs is not None:
            gangs.stopped.set()
        for process in processes.values():
            with contextlib.suppress(Exception):
                process.terminate()
                process.wait(30)
        cluster.down()
        subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=REPO,
                       capture_output=True)

    def settled(build: str, before: float) -> int:
        """The last sample before `before` (the value a restart's effect settled to)."""
        rows = [kib for t, kib in samples[build] if t < before]
        return rows[-1] // 1024 if rows else 0

    ends = [start for start, _ in marks] + [float("inf")]
    result: dict[str, Any] = {"benchmark": "relist_memory", "base": args.base,
                              "nodes": args.nodes, "pods": args.pods,
                              "restarts": [round(b - a, 1) for a, b in marks],
                              "gangs_created": gangs.created if gangs else 0, "rss_mib": {}}
    print(f"{'build':<10} {'warm':>6} " + " ".join(f"{'r' + str(i):>6}"
                                                     for i in range(len(marks))) + "  growth")
    for build in samples:
        row = [settled(build, at) for at in ends]
        peak = max((kib for _, kib in samples[build]), default=0) // 1024
        growth = (row[-1] - row[0]) / row[0] if row and row[0] else None
        result["rss_mib"][build] = {"settled": row, "peak": peak,
                                    "growth": round(growth, 3) if growth is not None else None}
        shown = f"{growth:+.1%}" if growth is not None else "-"
        print(f"{build:<10} " + " ".join(f"{v:>6}" for v in row) + f"  {shown}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
