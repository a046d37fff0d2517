"""Streaming list (WatchList) against a paged list, on the real API server.

    .venv/bin/python -m benchmarks.watchlist --pods 50000 --recorded DIR

DIR is a folder `benchmarks.cache_scale --keep-files DIR` wrote: its pods.json (the
real API server's pods, managedFields and all) is the template. The pods are created
bound to nodes no kubelet (KWOK) runs, so nothing rewrites them while they are listed;
their size is the recorded pods'. Then, alternately and three times each:

- paged: `GET /api/v1/pods?resourceVersion=0&limit=1000`, following `continue`, as
  kube.watch lists;
- streamed: `GET /api/v1/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=
  NotOlderThan&resourceVersion=0&allowWatchBookmarks=true`, read until the BOOKMARK
  annotated `k8s.io/initial-events-end`;

each read by Phalanx's pod decoder (PodWire) into records, timing the whole and the
kube-apiserver's peak resident memory during it (VmHWM, reset through clear_refs before
each). The first answer also says whether the server serves streaming lists at all.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.report import print_result
from kube import KubeClient, Response
from kube.resources import PODS
from localcluster.bulk import create_all, ensure_namespace
from localcluster.cluster import LocalCluster, _cmdline
from topology.records import PodWire
from topology.synthetic import KWOK_ANNOTATION, ClusterSpec, synth_nodes

INITIAL_EVENTS_END = b"k8s.io/initial-events-end"


def _apiserver(cluster: LocalCluster) -> int:
    return next(pid for pid in cluster.processes() if "kube-apiserver" in _cmdline(pid))


def _reset_peak(pid: int) -> int:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _peak(pid)


def _peak(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


def paged(kube: KubeClient, wire: PodWire) -> int:
    query: dict[str, str] = {"resourceVersion": "0", "limit": "1000"}
    count = 0
    while True:
        reply = kube.request("GET", PODS.path(), query=query, timeout=600)
        assert isinstance(reply, Response)
        items, _, token = wire.page(reply.data)
        count += len([wire.record(item) for item in items])
        if not token:
            return count
        query = {"limit": "1000", "continue": token}


def streamed(kube: KubeClient, wire: PodWire) -> int:
    response = kube.stream(PODS.path(), timeout=600, query={
        "watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
        "resourceVersion": "0", "allowWatchBookmarks": "true", "timeoutSeconds": "600"})
    count = 0
    try:
        for line in response:
            kind, obj = wire.event(line)
            if kind == "BOOKMARK":
                if INITIAL_EVENTS_END in line:
                    return count
                continue
            if kind != "ADDED":
                raise RuntimeError(f"unexpected {kind} event: {line[:300]!r}")
            wire.record(obj)
            count += 1
    finally:
        with contextlib.suppress(Exception):  # ended by the server already
            response.shutdown()  # the watch goes on after the initial events: cut it
        response.close()
    raise RuntimeError("the stream ended before the initial-events-end bookmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--recorded", type=Path, required=True)
    args = parser.parse_args(argv)
    recorded = orjson.loads((args.recorded / "pods.json").read_bytes())["items"]
    templates = [p for p in recorded if p["spec"].get("nodeName")]
    result: dict[str, Any] = {"benchmark": "watchlist", "pods": args.pods}
    cluster = LocalCluster(name="phalanx-bench-watchlist-h")
    cluster.down()
    try:
        cluster.up()
        kube = cluster.kube()
        nodes = synth_nodes(ClusterSpec(nodes=args.nodes, seed=4))
        for node in nodes:
            node["metadata"]["annotations"].pop(KWOK_ANNOTATION)  # no kubelet: pods stay put
        create_all(kube, nodes)
        ensure_namespace(kube, "inference")
        ensure_namespace(kube, "training")
        pods = []
        for i in range(args.pods):
            pod = templates[i % len(templates)]
            meta = {k: v for k, v in pod["metadata"].items()
                    if k not in ("uid", "resourceVersion", "creationTimestamp",
                                 "managedFields", "generateName", "ownerReferences")}
            meta["name"] = f"{meta['name']}-{i}"
            spec = {**pod["spec"], "nodeName": nodes[i % len(nodes)]["metadata"]["name"]}
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        started = time.monotonic()
        create_all(kube, pods, concurrency=64)
        result["create_s"] = round(time.monotonic() - started, 1)
        del pods
        apiserver = _apiserver(cluster)
        for round_ in range(args.rounds):
            for name, read in (("paged", paged), ("streamed", streamed)):
                before = _reset_peak(apiserver)
                started = time.monotonic()
                try:
                    count = read(kube, PodWire())
                except Exception as exc:  # the server refusing it is an answer too
                    result[f"{name}_error"] = str(exc)[:500]
                    continue
                took = time.monotonic() - started
                result.setdefault(name, []).append({
                    "round": round_, "pods": count, "s": round(took, 2),
                    "apiserver_rss_before_mb": before,
                    "apiserver_peak_mb": _peak(apiserver)})
    finally:
        cluster.down()
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
