"""Cache start-up at fleet scale: list + index nodes, from the real apiserver and from a
recorded stream of its replies.

    .venv/bin/python -m benchmarks.cache_startup [--nodes 20000] [--recorded 100000]

1. Creates `--nodes` synthetic p5 nodes on a fresh local control plane *without* the KWOK
   annotation (no fake kubelet heartbeats them; the list is the same size either way) and
   times a cold start in a child process: the raw-JSON list (resourceVersion=0, served
   from the apiserver's watch cache, as informers list), parsing into records and the
   first domain tree, with the child's peak RSS.
2. On 2 cores the apiserver itself needs ~0.1 ms per node to serialise a list, so a
   100k-node list is mostly the server's time. For `--recorded` nodes the reply the real
   apiserver gave in step 1 is recorded and replicated (node names and hostname labels
   made unique) to that size and cut into 1,000-node pages, and a second child process
   decodes and parses them page by page, as the cache does, then indexes the tree:
   Phalanx's own share of a 100k-node start-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from typing import Any

import orjson

from benchmarks.report import print_result
from kube import Response
from kube.resources import NODES
from localcluster.bulk import create_all
from localcluster.cluster import LocalCluster
from topology.synthetic import KWOK_ANNOTATION, ClusterSpec, synth_nodes

RECORDED = r"""
import gc, json, sys, time
from scheduler.cache import ClusterCache
from kube import Response
from topology.presets import resolve_preset
# One page (1,000 nodes, as a paginated list returns them) per line, read as needed:
# only what the cache itself keeps stays in memory.
cache = ClusterCache(resolve_preset("aws"))
gc.collect()
started = time.perf_counter()
records, decoded, size = [], 0.0, 0
gc.disable()  # as the watch's list loop does (kube/watch.py)
for page in open(sys.argv[1], "rb"):
    size += len(page)
    t0 = time.perf_counter()
    raw = Response(200, page, {}).json()["items"]
    decoded += time.perf_counter() - t0
    records.extend(cache.parse_nodes(raw))
    del raw
gc.enable()
cache.install_nodes(records)
parsed = time.perf_counter() - started
rss_parsed_mb = int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
snapshot = cache.snapshot()
total = time.perf_counter() - started
# VmHWM, not ru_maxrss: the latter keeps the parent's size from before exec().
rss_mb = next(int(line.split()[1]) // 1024 for line in open("/proc/self/status")
              if line.startswith("VmHWM"))
print(json.dumps({"recorded_nodes": len(cache.nodes),
                  "recorded_mb": round(size / 1e6),
                  "decode_s": round(decoded, 2), "decode_and_parse_s": round(parsed, 2),
                  "with_domain_tree_s": round(total, 2), "rss_after_parse_mb": rss_parsed_mb,
                  "peak_rss_mb": rss_mb}))
"""

CHILD = r"""
import json, sys, time
from scheduler.cache import ClusterCache
from kube import KubeClient, Watcher
from kube.resources import NODES
from topology.presets import resolve_preset
kube = KubeClient.from_kubeconfig(sys.argv[1])
cache = ClusterCache(resolve_preset("aws"))
started = time.perf_counter()
watcher = Watcher(kube, NODES.path(), name="nodes", convert=cache.parse_nodes,
                  on_replace=cache.install_nodes, on_event=cache.node_event).start()
watcher.synced.wait(600)
listed = time.perf_counter() - started
snapshot = cache.snapshot()
total = time.perf_counter() - started
# VmHWM, not ru_maxrss: the latter keeps the parent's size from before exec().
rss_mb = next(int(line.split()[1]) // 1024 for line in open("/proc/self/status")
              if line.startswith("VmHWM"))
print(json.dumps({"nodes_cached": len(cache.nodes), "list_and_parse_s": round(listed, 2),
                  "with_domain_tree_s": round(total, 2),
                  "domains_l3": snapshot.tree.domain_count(3), "peak_rss_mb": rss_mb}))
"""


def _replicate(node_list: dict[str, Any], count: int) -> list[bytes]:
    """The apiserver's own NodeList reply, grown to `count` items with unique names and
    cut into 1,000-node pages."""
    items = node_list["items"]
    grown = []
    for i in range(count):
        node = json.loads(json.dumps(items[i % len(items)])) if i >= len(items) else items[i]
        if i >= len(items):
            name = f"{node['metadata']['name']}-r{i // len(items)}"
            node["metadata"]["name"] = name
            node["metadata"]["labels"]["kubernetes.io/hostname"] = name
            node["metadata"]["uid"] = f"{node['metadata'].get('uid', '')}-{i}"
        grown.append(node)
    return [orjson.dumps({**node_list, "items": grown[i:i + 1000]})
            for i in range(0, len(grown), 1000)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=20_000)
    parser.add_argument("--recorded", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    cluster = LocalCluster(name="phalanx-bench-cache")
    cluster.down()
    try:
        cluster.up()
        nodes = synth_nodes(ClusterSpec(nodes=args.nodes, seed=3))
        for node in nodes:
            node["metadata"]["annotations"].pop(KWOK_ANNOTATION)
            node["status"].pop("conditions")
        started = time.monotonic()
        report = create_all(cluster.kube(), nodes, concurrency=64)
        create_s = time.monotonic() - started
        del nodes
        child = subprocess.run([sys.executable, "-c", CHILD, str(cluster.kubeconfig)],
                               capture_output=True, text=True, check=True)
        result = {"benchmark": "cache_startup", "nodes": args.nodes,
                  "create_nodes_per_s": round(report.per_second, 1),
                  "create_s": round(create_s, 1), **json.loads(child.stdout)}
        reply = cluster.kube().request("GET", NODES.path(),
                                       query={"resourceVersion": "0"}, timeout=300)
        assert isinstance(reply, Response)
        recorded = orjson.loads(reply.data)
    finally:
        if not args.keep:
            cluster.down()
    # Replayed with the control plane stopped: its 2 cores are then the scheduler's alone.
    pages = _replicate(recorded, args.recorded)
    del recorded
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as stream:
        for page in pages:
            stream.write(page + b"\n")
        stream.flush()
        del pages
        child = subprocess.run([sys.executable, "-c", RECORDED, stream.name],
                               capture_output=True, text=True, check=True)
    result.update({f"recorded_{k}" if not k.startswith("recorded") else k: v
                   for k, v in json.loads(child.stdout).items()})
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
