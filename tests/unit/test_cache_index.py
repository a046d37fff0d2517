"""The cache keeps bound pods' usage per node event by event; it must always equal
what summing every pod afresh gives."""

import random

import numpy as np

from scheduler.cache import ClusterCache
from topology.podrules import HostPort, InterPod, PodAffinityTerm
from topology.presets import resolve_preset
from topology.records import NodeRecord, PodRecord
from topology.snapshot import build_tree, snapshot_of


def from_scratch(cache: ClusterCache) -> dict[str, dict[str, int]]:
    used: dict[str, dict[str, int]] = {}
    for pod in cache.pods.values():
        if pod.consumes_capacity:
            slot = used.setdefault(pod.node_name, {})
            for name, amount in pod.requests.items():
                slot[name] = slot.get(name, 0) + amount
    return used


def test_running_usage_equals_a_fresh_sum_through_any_sequence_of_events():
    rng = random.Random(17)
    cache = ClusterCache(resolve_preset("aws"))
    nodes = [f"n{i}" for i in range(5)]
    cache.install_nodes([NodeRecord(n, {"kubernetes.io/hostname": n},
                                    {"cpu": 64, "nvidia.com/gpu": 8, "pods": 110})
                         for n in nodes[:4]])  # n4: a node the cache does not hold
    rules = [InterPod(), InterPod(host_ports=(HostPort(80),)),
             InterPod(anti_affinity=(PodAffinityTerm(None, "kubernetes.io/hostname"),))]
    for step in range(3000):
        name = f"p{rng.randrange(40)}"
        action = rng.random()
        if action < 0.15:
            cache.pod_event("DELETED", {"metadata": {"namespace": "ns", "name": name}})
        elif action < 0.17:
            cache.install_pods([PodRecord("ns", f"p{i}", node_name=rng.choice(nodes),
                                          requests={"cpu": i + 1, "pods": 1})
                                for i in range(rng.randrange(10))])
        else:
            bound = rng.random() < 0.6
            cache.put_pod(PodRecord(
                "ns", name, node_name=rng.choice(nodes) if bound else "",
                phase=rng.choice(["Running", "Running", "Succeeded", "Pending"]),
                requests={"cpu": rng.randrange(1, 4), "pods": 1,
                          **({"nvidia.com/gpu": 1} if rng.random() < 0.5 else {})},
                nominated_node="" if bound or rng.random() < 0.5 else rng.choice(nodes),
                inter_pod=rng.choice(rules)))
        if step == 1000:
            cache.snapshot()  # from here on the snapshot entries are kept event by event
        if step == 2000:
            cache.install_nodes(list(cache.nodes.values())[:3])  # a new tree: rebuilt
        if step % 100 == 0 or step == 2999:
            same_snapshot(cache)
            expected = from_scratch(cache)
            nominated = [p for p in cache.pods.values()
                         if p.nominated_node and not p.node_name and not p.terminal]
            for pod in nominated:
                slot = expected.setdefault(pod.nominated_node, {})
                for res, amount in pod.requests.items():
                    slot[res] = slot.get(res, 0) + amount
            assert cache.usage() == expected
            assert sorted(p.key for _, p in cache.placed()) == sorted(
                [p.key for p in cache.pods.values() if p.consumes_capacity]
                + [p.key for p in nominated])


def same_snapshot(cache: ClusterCache) -> None:
    """The cache's snapshot equals one built afresh from its pods by snapshot_of."""
    got = cache.snapshot()
    placed = cache.placed()
    expected = snapshot_of(build_tree(list(cache.nodes.values()), cache.preset),
                           cache.usage(placed), placed)
    assert got.resources == expected.resources and np.array_equal(got.free, expected.free)

    def keys(entries):
        return sorted((row, pod.key) for row, pod in entries)
    assert keys(got.placed) == keys(expected.placed)
    assert keys(got.with_anti_affinity) == keys(expected.with_anti_affinity)
    assert keys(got.with_host_ports) == keys(expected.with_host_ports)
