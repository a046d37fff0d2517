import re

import pytest

from topology.quantity import format_units, parse_quantity, to_units
from topology.records import (
    NodeRecord,
    RecordError,
    Requirement,
    SelectorTerm,
    Taint,
    Toleration,
    node_from_json,
    pod_from_json,
)


@pytest.mark.parametrize(("resource", "text", "units"), [
    ("cpu", "191450m", 191450), ("cpu", "2", 2000), ("cpu", "0.5", 500), ("cpu", 3, 3000),
    ("memory", "1938410Mi", 1938410 * 2**20), ("memory", "1Gi", 2**30), ("memory", "1G", 10**9),
    ("memory", "1e3", 1000), ("nvidia.com/gpu", "8", 8), ("memory", "100k", 100_000),
    ("cpu", "1u", 1),  # rounded up, as the API server does
])
def test_quantities(resource, text, units):
    assert to_units(resource, text) == units


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "5Qi", True])
def test_bad_quantities_name_the_text(bad):
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(bad)


def test_format_units_is_readable():
    assert format_units("cpu", 1500) == "1500m" and format_units("cpu", 2000) == "2"
    assert format_units("memory", 64 * 2**30) == "64Gi"
    assert format_units("nvidia.com/gpu", 8) == "8"


def node_json(**overrides):
    node = {"metadata": {"name": "n1", "labels": {"a": "1"}},
            "spec": {"taints": [{"key": "gpu", "value": "maint", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    node.update(overrides)
    return node


def test_node_record_reads_what_placement_needs():
    node = node_from_json(node_json())
    assert node == NodeRecord("n1", {"a": "1"}, {"cpu": 4000, "nvidia.com/gpu": 8},
                              (Taint("gpu", "maint", "NoSchedule"),), False, True)
    not_ready = node_from_json(node_json(status={"conditions": [
        {"type": "Ready", "status": "Unknown"}]}))
    assert not not_ready.ready and not_ready.allocatable == {}
    assert node_from_json(node_json(spec={"unschedulable": True})).unschedulable


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda n: n["metadata"].pop("name"), "metadata.name"),
    (lambda n: n["metadata"].update(labels={"a": 1}), "metadata.labels"),
    (lambda n: n["status"].update(allocatable={"cpu": "lots"}), "status.allocatable.cpu"),
    (lambda n: n["spec"].update(taints=[{"value": "x"}]), "spec.taints[0]"),
])
def test_bad_node_names_the_field(mutate, field):
    node = node_json()
    mutate(node)
    with pytest.raises(RecordError, match=field.replace("[", r"\[").replace("]", r"\]")):
        node_from_json(node)


def test_effective_requests_follow_init_and_sidecar_rules():
    pod = pod_from_json({
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "initContainers": [
                {"name": "big-init", "resources": {"requests": {"cpu": "8"}}},
                {"name": "sidecar", "restartPolicy": "Always",
                 "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "late-init", "resources": {"requests": {"cpu": "2"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "2"},
                                            "limits": {"nvidia.com/gpu": "8"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1"}}},
            ],
            "overhead": {"cpu": "100m"},
        },
    })
    # app 2+1 + sidecar 1 = 4 cpu; big-init 8 alone; late-init 2 + sidecar 1 = 3 -> max 8
    assert pod.requests == {"cpu": 8100, "memory": 2**30, "nvidia.com/gpu": 8, "pods": 1}


def test_pod_owner_rank_labels_and_capacity_use():
    pod = pod_from_json({
        "metadata": {"name": "train-3", "namespace": "ml", "labels": {"x": "y"},
                     "ownerReferences": [{"kind": "StatefulSet", "name": "train", "uid": "u",
                                          "controller": True}]},
        "spec": {"nodeName": "n1", "schedulerName": "phalanx", "containers": []},
        "status": {"phase": "Running"},
    })
    assert pod.owner.kind == "StatefulSet" and pod.owner.name == "train"
    assert pod.consumes_capacity and pod.key == "ml/train-3"
    done = pod_from_json({"metadata": {"name": "d"}, "spec": {"nodeName": "n"},
                          "status": {"phase": "Succeeded"}})
    assert not done.consumes_capacity


@pytest.mark.parametrize(("op", "values", "labels", "expected"), [
    ("In", ("a", "b"), {"k": "a"}, True), ("In", ("a",), {"k": "c"}, False),
    ("In", ("a",), {}, False), ("NotIn", ("a",), {"k": "b"}, True),
    ("NotIn", ("a",), {}, True), ("NotIn", ("a",), {"k": "a"}, False),
    ("Exists", (), {"k": ""}, True), ("Exists", (), {}, False),
    ("DoesNotExist", (), {}, True), ("DoesNotExist", (), {"k": "x"}, False),
    ("Gt", ("5",), {"k": "6"}, True), ("Gt", ("5",), {"k": "5"}, False),
    ("Lt", ("5",), {"k": "4"}, True), ("Lt", ("5",), {"k": "x"}, False),
])
def test_affinity_operators(op, values, labels, expected):
    assert Requirement("k", op, values).matches(labels, "node") is expected


def test_affinity_terms_and_match_fields():
    term = SelectorTerm((Requirement("metadata.name", "In", ("n1",), on_field=True),
                         Requirement("zone", "In", ("a",))))
    assert term.matches({"zone": "a"}, "n1") and not term.matches({"zone": "a"}, "n2")
    assert not SelectorTerm(()).matches({}, "n1")
    pod = pod_from_json({"metadata": {"name": "p"}, "spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}})
    assert pod.affinity[0].matches({"zone": "a"}, "x")
    with pytest.raises(RecordError, match="matchExpressions"):
        pod_from_json({"metadata": {"name": "p"}, "spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "z", "operator": "Near"}]}]}}}}})


def test_tolerations():
    taint = Taint("gpu", "maint", "NoSchedule")
    assert Toleration("gpu", "Equal", "maint", "NoSchedule").tolerates(taint)
    assert Toleration("gpu", "Exists").tolerates(taint)
    assert Toleration(operator="Exists").tolerates(taint)
    assert not Toleration("gpu", "Equal", "other").tolerates(taint)
    assert not Toleration("gpu", "Exists", effect="NoExecute").tolerates(taint)


def _pod(**spec_extra):
    return {"metadata": {"name": "p", "namespace": "ml", "labels": {"app": "x", "tier": "a"}},
            "spec": {"containers": [{"name": "c"}], **spec_extra}}


def test_inter_pod_terms_ports_and_spread_are_read():
    from topology.podrules import HostPort

    record = pod_from_json(_pod(
        affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone",
             "matchLabelKeys": ["tier"]}],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]},
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "Exists"}]},
                 "topologyKey": "rack", "namespaceSelector": {}}]},
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {}}]}},
        containers=[{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080,
                                             "protocol": "UDP"}]}],
        topologySpreadConstraints=[{"maxSkew": 2, "topologyKey": "zone",
                                    "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3,
                                    "labelSelector": {"matchLabels": {"app": "x"}}}],
        preemptionPolicy="Never"))
    rules = record.inter_pod
    anti = rules.anti_affinity[0]
    assert anti.topology_key == "zone" and anti.selector is not None
    assert anti.selector.matches({"app": "x", "tier": "a"})
    assert not anti.selector.matches({"app": "x", "tier": "b"})  # matchLabelKeys merged
    assert anti.selects("ml", "ml", {"app": "x", "tier": "a"}, {})
    assert not anti.selects("ml", "other", {"app": "x", "tier": "a"}, {})
    assert rules.affinity[0].selects("ml", "other", {"app": "y"}, {})  # {} = all namespaces
    assert rules.host_ports == (HostPort(8080, "UDP"),)
    assert rules.spread[0].max_skew == 2 and rules.spread[0].min_domains == 3
    assert rules.spread[0].hard and rules.preferred and record.preferred_node_affinity
    assert record.preemption_policy == "Never"
    assert rules.selector_keys() == {"app", "tier"}


def test_host_port_conflicts_follow_node_ports():
    from topology.podrules import HostPort

    assert HostPort(80).conflicts(HostPort(80, ip="10.0.0.1"))
    assert not HostPort(80, ip="10.0.0.2").conflicts(HostPort(80, ip="10.0.0.1"))
    assert not HostPort(80).conflicts(HostPort(80, "UDP"))
    assert not HostPort(80).conflicts(HostPort(81))


def test_volumes_claims_and_status_are_read():
    record = pod_from_json({**_pod(
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data-p"}},
                 {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                 {"name": "disk", "awsElasticBlockStore": {"volumeID": "vol-1"}},
                 {"name": "cfg", "configMap": {"name": "c"}}],
        resourceClaims=[{"name": "gpu", "resourceClaimName": "gpu-claim"}],
        resources={"requests": {"cpu": "4"}}), "status": {"nominatedNodeName": "n1"}})
    assert record.volumes.claims == ("data-p", "p-scratch")
    assert record.volumes.in_tree == ("awsElasticBlockStore",)
    assert record.volumes.resource_claims == ("gpu",)
    assert record.nominated_node == "n1"
    assert record.requests["cpu"] == 4000  # pod-level resources win


@pytest.mark.parametrize(("spec", "field"), [
    ({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "z",
                                     "whenUnsatisfiable": "DoNotSchedule"}]}, "maxSkew"),
    ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "z",
                                     "whenUnsatisfiable": "Maybe"}]}, "whenUnsatisfiable"),
    ({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {}}]}}}, "podAffinity.required[0]"),
    ({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "z", "labelSelector": {"matchExpressions": [
            {"key": "a", "operator": "Gt", "values": ["1"]}]}}]}}}, "matchExpressions[0]"),
    ({"containers": [{"name": "c", "ports": [{"hostPort": "80"}]}]}, "hostPort"),
    ({"volumes": [{"name": "v", "persistentVolumeClaim": {}}]}, "claimName"),
    ({"preemptionPolicy": "Sometimes"}, "preemptionPolicy"),
])
def test_bad_pod_rules_name_the_field(spec, field):
    with pytest.raises(RecordError, match=re.escape(field)):
        pod_from_json(_pod(**spec))
