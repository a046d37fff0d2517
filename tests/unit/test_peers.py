"""benchmarks/peers without a cluster: how a gang is dressed for each peer, and the level
kube-scheduler-tas is told (the peers themselves run only in benchmarks/kwok_placement:
their builds are not part of `make test`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from benchmarks.kwok_placement import _jobset, statefulset
from benchmarks.peers import PEERS, GangSpec, apply_gang, load, pod_templates
from benchmarks.peers.coscheduling import POD_GROUP_LABEL, Coscheduling
from benchmarks.peers.kube_scheduler_tas import GPU, KubeSchedulerTas, profile, required_level
from benchmarks.peers.scheduler_process import scheduler_config
from kube.resources import NATIVE_POD_GROUPS, POD_GROUPS
from topology.presets import PRESETS
from topology.records import node_from_json, pod_from_json
from topology.snapshot import TopologySnapshot, build_snapshot, usage_from_pods
from topology.synthetic import ClusterSpec, synth_load, synth_nodes

LEVELS = PRESETS["aws"].keys[:4]


def _fleet() -> tuple[list[dict[str, Any]], TopologySnapshot]:
    spec = ClusterSpec(nodes=300, occupancy=0.4, seed=7)
    nodes = synth_nodes(spec)
    pods = [pod_from_json(p) for p in synth_load(spec, nodes)]
    snapshot = build_snapshot([node_from_json(n) for n in nodes], usage_from_pods(pods),
                              PRESETS["aws"])
    return nodes, snapshot


def _largest(nodes: list[dict[str, Any]], snapshot: TopologySnapshot, depth: int) -> int:
    """Free 8-GPU slots of the largest domain at LEVELS[depth], counted from the labels."""
    gpus = snapshot.free[:, snapshot.resources.index(GPU)]
    per_domain: dict[tuple[str, ...], int] = defaultdict(int)
    for node in nodes:
        labels = node["metadata"]["labels"]
        path = tuple(labels[key] for key in LEVELS[:depth + 1])
        per_domain[path] += int(gpus[snapshot.tree.index[node["metadata"]["name"]]]) // 8
    return max(per_domain.values())


def test_tas_is_told_the_lowest_level_whose_largest_domain_holds_the_gang() -> None:
    nodes, snapshot = _fleet()
    rack = _largest(nodes, snapshot, 3)
    assert required_level(snapshot, rack)[0] == LEVELS[3]
    key, why = required_level(snapshot, rack + 1)
    above = next(d for d in (2, 1, 0) if _largest(nodes, snapshot, d) > rack)
    assert key == LEVELS[above]
    assert f"the largest {LEVELS[3]} domain had only {rack}" in why
    key, why = required_level(snapshot, 10**6)
    assert key is None and why.startswith("no constraint")


def test_tas_gang_is_a_podgroup_with_one_required_topology_key() -> None:
    _, snapshot = _fleet()
    gang = KubeSchedulerTas().gang("g0-8", 8, snapshot)
    (group,) = gang.objects
    assert group.resource == NATIVE_POD_GROUPS and group.name == "g0-8"
    assert group.body["spec"] == {"schedulingPolicy": {"gang": {"minCount": 8}},
                                  "schedulingConstraints": {"topology": [{"key": LEVELS[3]}]}}
    assert gang.pod_spec == {"schedulingGroup": {"podGroupName": "g0-8"}}
    assert gang.note and LEVELS[3] in gang.note


def test_tas_config_packs_by_gpus_without_leader_election(tmp_path: Any) -> None:
    config = scheduler_config(tmp_path / "kubeconfig", profile("kube-scheduler-tas"))
    assert config["leaderElection"] == {"leaderElect": False}
    (only,) = config["profiles"]
    assert only["schedulerName"] == "kube-scheduler-tas"
    assert only["pluginConfig"] == [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {
        "type": "MostAllocated", "resources": [{"name": GPU, "weight": 1}]}}}]


def test_coscheduling_gang_is_a_labelled_podgroup() -> None:
    _, snapshot = _fleet()
    gang = Coscheduling().gang("g1", 16, snapshot)
    (group,) = gang.objects
    assert group.resource == POD_GROUPS
    assert group.body["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert group.body["spec"] == {"minMember": 16}
    assert gang.pod_labels == {POD_GROUP_LABEL: "g1"}


def test_apply_gang_dresses_every_pod_template() -> None:
    gang = GangSpec(pod_labels={"a": "1"}, pod_annotations={"b": "2"},
                    pod_spec={"schedulingGroup": {"podGroupName": "x"}},
                    workload_labels={"queue": "q"})
    for workload in (statefulset("x", 4, "s", 8), _jobset("x", 32, "s", 16)):
        apply_gang(workload, gang)
        assert workload["metadata"]["labels"] == {"queue": "q"}
        templates = pod_templates(workload)
        assert templates
        for template in templates:
            assert template["metadata"]["labels"]["a"] == "1"
            assert template["metadata"]["annotations"] == {"b": "2"}
            assert template["spec"]["schedulingGroup"] == {"podGroupName": "x"}
            assert template["spec"]["schedulerName"] == "s"


def test_every_registered_peer_loads_and_names_itself() -> None:
    for name in PEERS:
        peer = load(name)
        assert peer.name == name
        assert peer.workloads <= {"statefulset", "jobset"}
