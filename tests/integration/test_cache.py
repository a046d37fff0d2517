"""The cluster cache converges with the API server through list + watch."""

from __future__ import annotations

import pytest

from kube import api_path
from localcluster.bulk import create_all, ensure_namespace, wait_until
from scheduler.cache import ClusterCache
from scheduler.informers import Informers
from topology.presets import resolve_preset
from topology.synthetic import ClusterSpec, synth_nodes

pytestmark = pytest.mark.integration


@pytest.fixture()
def cache(kube):
    cache = ClusterCache(resolve_preset("aws"))
    informers = Informers(kube, cache, "phalanx").start()
    assert informers.wait_synced(60)
    yield cache
    informers.stop()


def test_cache_follows_nodes_and_pods_of_any_scheduler(kube, cache):
    nodes = synth_nodes(ClusterSpec(nodes=40, seed=77))
    for node in nodes:
        node["metadata"]["name"] = "cachetest-" + node["metadata"]["name"]
        node["metadata"]["labels"]["kubernetes.io/hostname"] = node["metadata"]["name"]
    create_all(kube, nodes)
    names = {n["metadata"]["name"] for n in nodes}
    wait_until(lambda: names <= set(cache.nodes), 30, "cache sees the new nodes")
    wait_until(lambda: all(cache.nodes[n].ready for n in names), 30, "nodes Ready in cache")

    ensure_namespace(kube, "cache-test")
    target = sorted(names)[0]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "busy", "namespace": "cache-test"},
           "spec": {"nodeName": target, "containers": [
               {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "3"}}}]}}
    create_all(kube, [pod])
    wait_until(lambda: cache.usage().get(target, {}).get("nvidia.com/gpu") == 3, 30,
               "the bound pod counted against its node")
    snapshot = cache.snapshot()
    assert snapshot.resource_column("nvidia.com/gpu")[snapshot.tree.index[target]] == 5

    kube.delete(api_path("", "v1", "pods", "cache-test", "busy"), gracePeriodSeconds=0)
    wait_until(lambda: "cache-test/busy" not in cache.pods, 30, "pod deletion seen")
    kube.delete(api_path("", "v1", "nodes", name=target))
    wait_until(lambda: target not in cache.nodes, 30, "node deletion seen")
    assert target not in cache.snapshot().tree.index


def test_assumed_pods_count_until_confirmed_or_forgotten(kube, cache):
    ensure_namespace(kube, "cache-test")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "waiting", "namespace": "cache-test"},
           "spec": {"schedulerName": "nobody", "containers": [
               {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    create_all(kube, [pod])
    wait_until(lambda: "cache-test/waiting" in cache.pods, 30, "pending pod in cache")
    record = cache.pods["cache-test/waiting"]
    node = sorted(cache.nodes)[0]
    before = cache.usage().get(node, {}).get("nvidia.com/gpu", 0)
    freed = cache.versions()[1]
    cache.assume(record, node)
    assert cache.usage()[node]["nvidia.com/gpu"] == before + 8
    assert cache.all_pods()[1] == {record.key: node}  # discovery does not offer it again
    cache.forget(record.key)
    assert cache.usage().get(node, {}).get("nvidia.com/gpu", 0) == before
    assert cache.all_pods()[1] == {} and cache.versions()[1] == freed + 1



def test_a_pod_that_succeeds_is_kept_apart_from_one_deleted(kube, cache):
    """Members that ran to completion count toward their gang; a pod leaving the
    unfinished-pods watch looks the same whether it succeeded or was deleted (the API
    server reports DELETED with its previous state), so the cache learns of success
    from a watch of Succeeded pods. Checked here against the real API server: the
    soak's hour found that a DELETED event's state says nothing of how the pod ended."""
    ensure_namespace(kube, "cache-test")
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": name, "namespace": "cache-test"},
             "spec": {"nodeName": "cachetest-nowhere", "schedulerName": scheduler,
                      "containers": [{"name": "c", "image": "x"}]}}
            for name, scheduler in (("succeeds", "phalanx"), ("deleted", "phalanx"),
                                    ("others-succeeds", "default-scheduler"))]
    create_all(kube, pods)
    keys = {"cache-test/succeeds", "cache-test/deleted", "cache-test/others-succeeds"}
    wait_until(lambda: keys <= set(cache.pods), 30, "the pods in the cache")
    for name in ("others-succeeds", "succeeds"):  # in this order: see the assertion
        kube.call("PATCH", api_path("", "v1", "pods", "cache-test", name, "status"),
                  body={"status": {"phase": "Succeeded"}},
                  content_type="application/merge-patch+json")
    kube.delete(api_path("", "v1", "pods", "cache-test", "deleted"), gracePeriodSeconds=0)
    wait_until(lambda: not keys & set(cache.pods), 30, "all gone from the unfinished pods")
    wait_until(lambda: "cache-test/succeeds" in cache.finished, 30, "success seen")
    # Another scheduler's completed pods are nobody's members: the API server filters
    # them out (the selector names this scheduler), so they are never even decoded. (Its
    # success came first, so had it been sent it would have been seen by now.)
    assert [p.key for p in cache.finished_pods() if p.namespace == "cache-test"] == [
        "cache-test/succeeds"]
    assert cache.finished["cache-test/succeeds"].phase == "Succeeded"
    kube.delete(api_path("", "v1", "pods", "cache-test", "succeeds"), gracePeriodSeconds=0)
    wait_until(lambda: "cache-test/succeeds" not in cache.finished, 30,
               "the succeeded pod's deletion seen")
