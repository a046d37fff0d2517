"""Phalanx's binder against client-go's, on one cluster, in the same run.

    .venv/bin/python -m benchmarks.bind_throughput [--pods 2048] [--concurrency 128]
        [--repeats 2] [--go-content-type protobuf|json]

On a fresh local control plane with `--pods` synthetic p5 nodes: per repeat, two
identical fresh sets of `--pods` pending pods (a schedulerName nobody serves, pod i of
either set to node i). One set is bound by Phalanx's Binder (`pods/binding`, the code
`phalanx run` binds with, its own client), the other by `hack/bindref`: client-go,
kube-scheduler's client, with the same number of binds in flight and no client-side
rate limit (built on demand by `hack/build-bindref.sh`). The order alternates between
repeats, and each bind waits until KWOK has turned the previous set Running, so both
meet the same background. The Go client is the ceiling: what this API server, on this
machine, accepts from a client that costs it as little as client-go does.

CPU: the API server's from /proc/<pid>/stat around each bind (what each client costs the
server, which shares the cores with it); Phalanx's is this process's (getrusage around
`bind_all`: every thread of the binder, nothing else runs meanwhile); the Go client's is
its own getrusage around its bind loop, and its whole-process total (start-up included)
from RUSAGE_CHILDREN.

Prints JSON (binds_per_s, go_client_binds_per_s, ratio, CPU-seconds per 1,000 binds of
each) and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.kwok_placement import process_cpu_seconds
from benchmarks.report import print_result
from kube import KubeClient
from kube.resources import PODS
from localcluster.binaries import REPO
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import populate
from scheduler.binder import Binder
from topology.synthetic import ClusterSpec, synth_nodes

NS = "bind-bench"


def build_bindref() -> Path:
    """hack/build-bindref.sh's binary (built once, cached)."""
    done = subprocess.run([str(REPO / "hack" / "build-bindref.sh")], check=True,
                          capture_output=True, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


def pending_pods(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{prefix}-{i}", "namespace": NS},
             "spec": {"schedulerName": "nobody", "containers": [
                 {"name": "c", "image": "x",
                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}
            for i in range(count)]


def running(kube: KubeClient, prefix: str, count: int) -> bool:
    """Every pod of the set Running: KWOK has written their status."""
    pods = kube.list_all(PODS.path(NS), {"fieldSelector": "status.phase=Running"})[0]
    return sum(1 for p in pods if p["metadata"]["name"].startswith(prefix + "-")) >= count


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bind_phalanx(kubeconfig: Path, placements: list[tuple[str, str]], concurrency: int
                 ) -> dict[str, Any]:
    """Phalanx's Binder on a client of its own (as `phalanx run` has), its connections
    open (as the Go client's is: one GET /version before its clock starts)."""
    kube = KubeClient.from_kubeconfig(str(kubeconfig), pool_size=concurrency)
    binder = Binder(kube, concurrency)
    binder.warm()
    try:
        cpu0 = cpu_seconds()
        results, seconds = binder.bind_all(placements)
        cpu = cpu_seconds() - cpu0
    finally:
        binder.close()
        kube.close()
    failed = [r for r in results if not r.ok]
    return {"binds": len(results), "failures": len(failed),
            "first_error": failed[0].reason if failed else "", "seconds": seconds,
            "cpu_s": cpu}


def bind_go(binary: Path, kubeconfig: Path, placements: list[tuple[str, str]],
            concurrency: int, content_type: str) -> dict[str, Any]:
    """hack/bindref on the same placements; its whole-process CPU (start-up included)
    from RUSAGE_CHILDREN, which grows by exactly the child's CPU once it is reaped."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("".join(f"{key} {node}\n" for key, node in placements))
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [str(binary), "-kubeconfig", str(kubeconfig), "-input", listing.name,
             "-workers", str(concurrency), "-content-type", content_type],
            capture_output=True, text=True, timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        os.unlink(listing.name)
    if done.returncode:
        raise RuntimeError(f"bindref failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["process_cpu_s"] = (after.ru_utime + after.ru_stime
                               - before.ru_utime - before.ru_stime)
    return result


def per_thousand(cpu_s: float, binds: int) -> float:
    return round(1000 * cpu_s / binds, 3) if binds else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=2048, help="pods per set (and nodes)")
    parser.add_argument("--concurrency", type=int, default=128, help="binds in flight, both")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--go-content-type", choices=("protobuf", "json"), default="protobuf")
    parser.add_argument("--name", default="phalanx-bench-bind")
    args = parser.parse_args(argv)
    binary = build_bindref()
    cluster = LocalCluster(name=args.name)
    cluster.down()
    rows: list[dict[str, Any]] = []
    try:
        cluster.up()
        kube = cluster.kube()
        spec = ClusterSpec(nodes=args.pods, seed=9)
        populate(kube, spec)
        ensure_namespace(kube, NS)
        nodes = [n["metadata"]["name"] for n in synth_nodes(spec)]
        apiserver = next(p for p in cluster.processes()
                         if "kube-apiserver" in Path(f"/proc/{p}/cmdline").read_text())
        for repeat in range(args.repeats):
            order = ("phalanx", "go") if repeat % 2 == 0 else ("go", "phalanx")
            for who in order:
                prefix = f"{who}{repeat}"
                create_all(kube, pending_pods(prefix, args.pods), concurrency=64)
                placements = [(f"{NS}/{prefix}-{i}", nodes[i]) for i in range(args.pods)]
                time.sleep(2.0)  # the creates' watch fan-out settles before the clock starts
                apiserver0 = process_cpu_seconds(apiserver)
                if who == "phalanx":
                    row = bind_phalanx(cluster.kubeconfig, placements, args.concurrency)
                else:
                    row = bind_go(binary, cluster.kubeconfig, placements, args.concurrency,
                                  args.go_content_type)
                row |= {"who": who, "repeat": repeat,
                        "apiserver_cpu_s": process_cpu_seconds(apiserver) - apiserver0,
                        "binds_per_s": row["binds"] / row["seconds"]}
                rows.append(row)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                  for k, v in row.items()}), flush=True)
                wait_until(partial(running, kube, prefix, args.pods), 300,
                           f"{prefix} pods Running", interval=1.0)
    finally:
        cluster.down()
    print_result(summarise(rows, args))
    return 0


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Totals over the repeats (binds / seconds of each side), and the per-repeat ratios."""
    def side(who: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["who"] == who]

    ours, go = side("phalanx"), side("go")
    rate = sum(r["binds"] for r in ours) / sum(r["seconds"] for r in ours)
    go_rate = sum(r["binds"] for r in go) / sum(r["seconds"] for r in go)
    ratios = [p["binds_per_s"] / g["binds_per_s"] for p, g in zip(ours, go, strict=True)]
    binds = sum(r["binds"] for r in ours)
    go_binds = sum(r["binds"] for r in go)
    return {
        "benchmark": "bind_throughput", "pods": args.pods, "concurrency": args.concurrency,
        "repeats": args.repeats, "go_content_type": args.go_content_type,
        "binds_per_s": round(rate, 1), "go_client_binds_per_s": round(go_rate, 1),
        "ratio": round(rate / go_rate, 3),
        "ratio_per_repeat": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
        "phalanx_binds_per_s_each": [round(r["binds_per_s"], 1) for r in ours],
        "go_binds_per_s_each": [round(r["binds_per_s"], 1) for r in go],
        "phalanx_cpu_s_per_1000_binds": per_thousand(sum(r["cpu_s"] for r in ours), binds),
        "go_cpu_s_per_1000_binds": per_thousand(sum(r["cpu_s"] for r in go), go_binds),
        "go_process_cpu_s_per_1000_binds": per_thousand(
            sum(r["process_cpu_s"] for r in go), go_binds),
        "apiserver_cpu_s_per_1000_binds_phalanx": per_thousand(
            sum(r["apiserver_cpu_s"] for r in ours), binds),
        "apiserver_cpu_s_per_1000_binds_go": per_thousand(
            sum(r["apiserver_cpu_s"] for r in go), go_binds),
        "failures": sum(r["failures"] for r in rows),
    }


if __name__ == "__main__":
    raise SystemExit(main())
