"""The wire path (PodWire: msgspec structs, shared template parts) must give the very
records the dict path (`pod_from_json`) gives, for every field placement reads."""

import copy
import re
from pathlib import Path

import orjson
import pytest

from benchmarks.differential import corpus
from topology.records import PodWire, RecordError, pod_from_json


def rich_pod(name: str = "p-0", **spec_extra) -> dict:
    container = {
        "name": "main", "image": "x", "env": [{"name": "A", "value": "1"}],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "8"},
                      "limits": {"nvidia.com/gpu": "8", "vpc.amazonaws.com/efa": "32"}},
        "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}],
    }
    spec = {
        "nodeName": "", "schedulerName": "phalanx", "priority": 1000,
        "preemptionPolicy": "Never", "nodeSelector": {"pool": "gpu"},
        "schedulingGates": [{"name": "wait"}], "schedulingGroup": {"podGroupName": "g"},
        "containers": [container, {"name": "side", "resources": {"requests": {"cpu": "1"}}}],
        "initContainers": [
            {"name": "init", "resources": {"requests": {"cpu": "8"}}},
            {"name": "sidecar", "restartPolicy": "Always",
             "resources": {"requests": {"memory": "1Gi"}},
             "ports": [{"containerPort": 9, "hostPort": 9090}]}],
        "overhead": {"cpu": "250m"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In",
                                           "values": ["a", "b"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In",
                                      "values": ["n1"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [
                        {"key": "x", "operator": "Exists"}]}}]},
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "train"}},
                 "topologyKey": "rack", "matchLabelKeys": ["job"]}]},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["db"]}]},
                 "topologyKey": "kubernetes.io/hostname", "namespaces": ["a"],
                 "namespaceSelector": {"matchLabels": {"team": "x"}}}],
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": "zone"}}]}},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}, {"operator": "Exists"}],
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "train"}}, "minDomains": 2,
             "matchLabelKeys": ["job"], "nodeTaintsPolicy": "Honor"}],
        "volumes": [
            {"name": "kube-api-access-abcde", "projected": {"sources": []}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}},
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "old", "awsElasticBlockStore": {"volumeID": "v"}}],
        "resourceClaims": [{"name": "gpu-claim", "resourceClaimName": "c"}],
        **spec_extra,
    }
    return {
        "metadata": {
            "name": name, "namespace": "ml", "uid": f"uid-{name}", "resourceVersion": "42",
            "creationTimestamp": "2026-12-04T16:00:00Z",
            "deletionTimestamp": "2026-12-04T16:01:00Z",
            "labels": {"app": "train", "job": name[-1]}, "annotations": {"a": "b"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                 "name": "train", "uid": "u", "controller": True}],
            "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {}}]},
        "spec": spec,
        "status": {"phase": "Running", "nominatedNodeName": "n2",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def through_wire(wire: PodWire, pods: list[dict]) -> list:
    """Each pod as the API server sends it: one list page, then one watch event each."""
    page = orjson.dumps({"kind": "PodList", "metadata": {"resourceVersion": "7",
                                                         "continue": "tok"},
                         "items": pods})
    items, version, token = wire.page(page)
    assert (version, token) == ("7", "tok")
    listed = [wire.record(item) for item in items]
    watched = []
    for pod in pods:
        kind, obj = wire.event(orjson.dumps({"type": "MODIFIED", "object": pod}))
        assert kind == "MODIFIED" and wire.version(obj) == pod["metadata"].get(
            "resourceVersion", "")
        watched.append(wire.record(obj))
    assert listed == watched
    return listed


def test_wire_records_equal_dict_records_for_every_rule():
    pods = [rich_pod("p-0"), rich_pod("p-1"), rich_pod("p-2", priority=None, volumes=None),
            {"metadata": {"name": "bare"}}]
    wire = PodWire()
    # twice through one PodWire: the second pass is served from the shared parts
    for _ in range(2):
        assert through_wire(wire, pods) == [pod_from_json(p) for p in pods]


def test_shared_parts_still_follow_each_pods_own_name_and_labels():
    """Pods of one template share parsed parts, except what depends on the pod itself:
    ephemeral claims are named after the pod, matchLabelKeys read its labels."""
    a, b = through_wire(PodWire(), [rich_pod("p-1"), rich_pod("p-2")])
    assert "p-1-scratch" in a.volumes.claims and "p-2-scratch" in b.volumes.claims
    assert a.inter_pod != b.inter_pod  # matchLabelKeys: job=1 vs job=2
    assert a.requests is b.requests and a.tolerations is b.tolerations


def test_differential_corpus_pods_read_alike():
    """Random pods of the differential corpus (every rule kube-scheduler checks)."""
    pods = []
    for case in corpus(60, 20261204):
        pods += [case.pod, *case.existing]
    assert through_wire(PodWire(), pods) == [pod_from_json(p) for p in pods]


@pytest.mark.parametrize(("path", "value", "field"), [
    (("spec", "priority"), "high", "spec.priority"),
    (("spec", "containers", 0, "resources", "requests", "cpu"), "lots",
     "spec.containers[0].resources.requests.cpu"),
    (("spec", "tolerations"), ["x"], "spec.tolerations[0]"),
    (("metadata", "labels"), {"a": 1}, "metadata.labels"),
])
def test_bad_fields_are_named_alike_and_not_remembered(path, value, field):
    bad = rich_pod("bad-1")
    target = bad
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(RecordError, match=re.escape(field)) as from_dict:
        pod_from_json(copy.deepcopy(bad))
    wire = PodWire()
    for name in ("bad-1", "bad-2"):  # the second is named too: errors are not cached
        bad["metadata"]["name"] = name
        items, _, _ = wire.page(orjson.dumps({"items": [bad]}))
        with pytest.raises(RecordError, match=re.escape(field)) as from_wire:
            wire.record(items[0])
        assert f"pod ml/{name}" in str(from_wire.value)
    assert str(from_wire.value).replace("bad-2", "bad-1") == str(from_dict.value)


def test_odd_pages_fall_back_to_dicts():
    wire = PodWire()
    # a field of a type the API never sends: the page falls back to dicts, read pod by pod
    odd = rich_pod("odd", affinity=[])
    items, _, _ = wire.page(orjson.dumps({"items": [odd, rich_pod("fine")]}))
    assert isinstance(items[0], dict)
    assert [wire.record(i) for i in items] == [pod_from_json(odd),
                                               pod_from_json(rich_pod("fine"))]
    # ... so does a container name or restartPolicy that is not a string (it would make
    # the containers' memo key unhashable)
    for field, value in (("name", {"x": 1}), ("restartPolicy", 5)):
        strange = rich_pod("strange")
        strange["spec"]["containers"][0][field] = value
        items, _, _ = wire.page(orjson.dumps({"items": [strange]}))
        assert isinstance(items[0], dict) and wire.record(items[0]) == pod_from_json(strange)


def test_real_api_server_pods_read_alike():
    """One pod of each kind benchmarks/cache_scale.py records from the real API server
    (v1.36.3, KWOK): DaemonSet pods with init containers, host ports and per-node
    affinity, CoreDNS, inference and training pods, a Pending pod; managedFields and
    KWOK's status included."""
    data = (Path(__file__).parent / "data" / "apiserver_pods.json").read_bytes()
    pods = orjson.loads(data)["items"]
    assert len(pods) == 10 and all(p["metadata"].get("managedFields") for p in pods)
    wire = PodWire()
    items, _, _ = wire.page(data)
    assert [wire.record(i) for i in items] == [pod_from_json(p) for p in pods]
    assert through_wire(wire, pods) == [pod_from_json(p) for p in pods]
    assert any(r.inter_pod.host_ports for r in through_wire(PodWire(), pods))


def ranked_pod(index: int, owned: bool = False) -> dict:
    """A pod with labels of its own (a rank label), and its own Job if `owned`."""
    made = rich_pod(f"p-{index}")
    made["metadata"]["labels"]["rank"] = str(index)
    if owned:
        made["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job",
                                                "name": f"j-{index}", "uid": f"u-{index}",
                                                "controller": True}]
    return made


def fed_cache():
    """A ClusterCache, and a function feeding it one watch event of a pod (as a dict)
    through its own PodWire, as the pod watch does."""
    from scheduler.cache import ClusterCache
    from topology.presets import resolve_preset

    cache = ClusterCache(resolve_preset("aws"))

    def event(kind: str, made: dict) -> None:
        _, obj = cache.pod_wire.event(orjson.dumps({"type": kind, "object": made}))
        cache.pod_event(kind, obj)

    return cache, event


def test_what_a_deleted_pod_alone_used_is_forgotten():
    """The memo follows the pods that exist, not every pod ever seen: a pod's unique
    labels (a rank label) and its job's owner go with it (the cache's DELETED event)."""
    cache, feed = fed_cache()
    wire = cache.pod_wire

    def pod(index: int) -> dict:
        return ranked_pod(index, owned=True)

    def event(kind: str, index: int) -> None:
        feed(kind, pod(index))

    for index in range(200):
        event("ADDED", index)
    assert len(wire._memo["labels"]) == 200 and len(wire._memo["owner"]) == 200
    for index in range(200):
        event("DELETED", index)
    assert not cache.pods
    assert len(wire._memo["labels"]) == 0 and len(wire._memo["owner"]) == 0
    event("ADDED", 7)  # and a pod like one forgotten reads as it did
    assert list(cache.pods.values()) == [pod_from_json(pod(7))]


def test_a_relist_drops_what_only_pods_deleted_during_the_gap_used():
    """Pods deleted while no watch ran get no DELETED event: the re-list that follows
    is what tells they are gone, and the memo entries only they used go with it."""
    from types import SimpleNamespace

    from kube.watch import Watcher
    from scheduler.cache import ClusterCache
    from topology.presets import resolve_preset

    cache = ClusterCache(resolve_preset("aws"))
    wire = cache.pod_wire
    pod = ranked_pod

    class Lists:
        """Answers every list with the pods it holds now (one page)."""

        def __init__(self) -> None:
            self.pods: list[dict] = []

        def request(self, method: str, path: str, **_: object) -> SimpleNamespace:
            return SimpleNamespace(data=orjson.dumps({
                "kind": "PodList", "metadata": {"resourceVersion": "9"},
                "items": self.pods}))

    lists = Lists()
    watcher = Watcher(lists, "/api/v1/pods", name="pods", convert=cache.parse_pods,
                      on_replace=cache.install_pods, on_event=cache.pod_event, wire=wire)
    lists.pods = [pod(i) for i in range(200)]
    watcher._list()
    before = dict(wire._memo["labels"])
    assert len(before) == 200
    lists.pods = lists.pods[:100]  # the other 100 were deleted during a watch gap
    watcher._list()
    after = wire._memo["labels"]
    assert len(cache.pods) == 100 and len(after) == 100
    assert all(after[key] is before[key] for key in after)  # kept, not parsed again
    assert [cache.pods[f"ml/p-{i}"] for i in range(100)] == [
        pod_from_json(pod(i)) for i in range(100)]


def test_annotations_a_pod_rewrites_do_not_pile_up_in_the_memo():
    """Regression (soak, issue 20): the soak's beacon pod is annotated once a second; a
    DELETED event names only a pod's last state, so each earlier annotation stayed in
    the memo (one entry per write, for good: ~0.4 KiB each). The tables are swept when
    they hold far more entries than there are pods, keeping what live records hold."""
    from topology.records import _SWEEP_SLACK

    cache, event = fed_cache()
    wire = cache.pod_wire

    for index in range(50):
        event("ADDED", ranked_pod(index, owned=True))
    shared = {key: record.labels for key, record in cache.pods.items()}
    beacon = ranked_pod(0, owned=True)
    most = 0
    for write in range(_SWEEP_SLACK + 2000):
        beacon["metadata"]["annotations"]["written"] = f"{write}.125"
        event("MODIFIED", beacon)
        most = max(most, len(wire._memo["annotations"]))
    assert most <= 50 + 50 // 4 + _SWEEP_SLACK + 1
    assert len(wire._memo["annotations"]) < 2100  # swept once, not emptied each write
    assert cache.pods["ml/p-0"] == pod_from_json(beacon)
    # What the other pods share is kept (not parsed again), and still found.
    assert all(cache.pods[key].labels is labels for key, labels in shared.items())
    twin = ranked_pod(7, owned=True)
    twin["metadata"]["name"] = "p-7b"
    event("ADDED", twin)
    assert cache.pods["ml/p-7b"].labels is shared["ml/p-7"]
    assert len(wire._memo["owner"]) == 50 and len(wire._memo["labels"]) == 50


def test_labels_the_api_server_adds_at_binding_do_not_pile_up_in_the_memo():
    """Regression (soak, issue 20): the API server's PodTopologyLabels admission plugin
    (beta, on by default since 1.35) copies the node's topology.kubernetes.io/zone and
    region labels onto each pod it binds. A pod's pending labels then differ from the
    ones its DELETED event names: every pod with labels of its own (a rank) left its
    pending entry behind, for good (the soak's hour bound 16,732 pods)."""
    from topology.records import _SWEEP_SLACK

    cache, event = fed_cache()
    wire = cache.pod_wire

    most, bound = 0, {}
    for index in range(_SWEEP_SLACK + 2000):  # 100 pods live at a time
        made = ranked_pod(index, owned=True)
        event("ADDED", made)
        made["spec"]["nodeName"] = f"n-{index % 7}"
        made["metadata"]["labels"]["topology.kubernetes.io/zone"] = f"z-{index % 7}"
        event("MODIFIED", made)
        assert cache.pods[f"ml/p-{index}"] == pod_from_json(made)
        bound[index] = made
        if index >= 100:
            event("DELETED", bound.pop(index - 100))
        most = max(most, len(wire._memo["labels"]))
    assert len(cache.pods) == 100
    assert most <= 100 + 100 // 4 + _SWEEP_SLACK + 1


def test_pods_of_one_template_share_their_parsed_containers():
    """Regression (soak, issue 20): the service account admission plugin mounts each
    pod's token under a random volume name and controllers write per-pod env (a rank),
    so no two real pods' containers are the same JSON. Keyed by that JSON, the requests
    and host-port memos held one entry per pod ever seen (~1.5 KiB each, never
    forgotten: every scheduler process of the soak's hour grew by hundreds of thousands
    of live blocks). Keyed by what placement reads, a template's pods share one."""
    wire = PodWire()
    pods = []
    for index in range(50):
        made = rich_pod(f"p-{index}")
        for container in made["spec"]["containers"]:
            container["env"] = [{"name": "RANK", "value": str(index)}]
            container["volumeMounts"] = [{"name": f"kube-api-access-{index:05x}",
                                          "mountPath": "/var/run/secrets"}]
        pods.append(made)
    records = through_wire(wire, pods)
    assert records == [pod_from_json(p) for p in pods]
    # (rich_pod's matchLabelKeys read its own "job" label: one rule set per value of it)
    jobs = {p["metadata"]["labels"]["job"] for p in pods}
    assert len(wire._memo["requests"]) == 1 and len(wire._memo["inter_pod"]) == len(jobs)
    assert len({id(r.requests) for r in records}) == 1
