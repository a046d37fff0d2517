"""A re-list (after an API server restart, or a watch too far behind) hands the cache
every object again: the records of those that did not change are the cached ones, so a
re-list does not hold the cache twice, and what is derived per record (discovery's
claims, keyed by the record object) stays valid."""

from typing import Any

import orjson

from scheduler.cache import ClusterCache
from topology.presets import resolve_preset
from topology.synthetic import ClusterSpec, as_list, synth_nodes


def pod(i: int, version: str, node: str = "") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "ns", "uid": f"u{i}",
                         "resourceVersion": version, "labels": {"app": "a"}},
            "spec": {"schedulerName": "phalanx", "nodeName": node,
                     "containers": [{"name": "c", "resources": {
                         "requests": {"cpu": "1", "nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running" if node else "Pending"}}


def relist(cache: ClusterCache, pods: list[dict[str, Any]]) -> None:
    items, _, _ = cache.pod_wire.page(orjson.dumps(as_list("PodList", pods)))
    cache.install_pods(cache.parse_pods(items))


def test_a_relist_keeps_the_records_of_pods_that_did_not_change():
    cache = ClusterCache(resolve_preset("aws"))
    nodes = synth_nodes(ClusterSpec(nodes=4, seed=1))
    names = [n["metadata"]["name"] for n in nodes]
    items, _, _ = cache.node_wire.page(orjson.dumps(as_list("NodeList", nodes)))
    cache.install_nodes(cache.parse_nodes(items))
    before_nodes = dict(cache.nodes)
    relist(cache, [pod(i, "1", names[i % 4] if i % 2 else "") for i in range(6)])
    before = dict(cache.pods)

    # p1 was re-bound elsewhere and p2 bound while the watch was down; p5 is gone.
    relist(cache, [pod(0, "1"), pod(1, "2", names[3]), pod(2, "2", names[0]),
                   pod(3, "1", names[3]), pod(4, "1")])
    assert cache.pods["ns/p0"] is before["ns/p0"]
    assert cache.pods["ns/p3"] is before["ns/p3"]
    assert cache.pods["ns/p4"] is before["ns/p4"]
    assert cache.pods["ns/p1"] is not before["ns/p1"]
    assert cache.pods["ns/p1"].node_name == names[3]
    assert cache.pods["ns/p2"].node_name == names[0]
    assert "ns/p5" not in cache.pods
    gpus = {n: u.get("nvidia.com/gpu", 0) for n, u in cache.usage().items()}
    assert {n: g for n, g in gpus.items() if g} == {names[3]: 2, names[0]: 1}

    nodes[1]["metadata"]["labels"]["extra"] = "x"  # relabelled while the watch was down
    items, _, _ = cache.node_wire.page(orjson.dumps(as_list("NodeList", nodes)))
    cache.install_nodes(cache.parse_nodes(items))
    assert cache.nodes[names[0]] is before_nodes[names[0]]
    assert cache.nodes[names[1]] is not before_nodes[names[1]]
    assert cache.nodes[names[1]].labels["extra"] == "x"
