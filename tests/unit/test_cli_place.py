import json

import pytest
import yaml

from scheduler.cli import main
from topology.synthetic import ClusterSpec, as_list, synth_load, synth_nodes

LAYER2 = "topology.k8s.aws/network-node-layer-2"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    spec = ClusterSpec(nodes=600, occupancy=0.4, seed=4)
    nodes = synth_nodes(spec)
    (folder / "nodes.json").write_text(json.dumps(as_list("NodeList", nodes)))
    (folder / "pods.json").write_text(json.dumps(as_list("PodList", synth_load(spec, nodes))))
    return folder


def statefulset(replicas=16, gpus=8, annotations=None, **spec_extra):
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "train", "namespace": "ml"},
        "spec": {"replicas": replicas, "serviceName": "train", **spec_extra,
                 "template": {"metadata": {"annotations": annotations or {}},
                              "spec": {"schedulerName": "phalanx", "containers": [
                                  {"name": "w", "resources": {
                                      "limits": {"nvidia.com/gpu": gpus}}}]}}},
    }


def run(fleet, tmp_path, capsys, gang, *extra):
    path = tmp_path / "gang.yaml"
    path.write_text(yaml.safe_dump_all(gang if isinstance(gang, list) else [gang]))
    code = main(["place", "--nodes", str(fleet / "nodes.json"), "--pods",
                 str(fleet / "pods.json"), "--gang", str(path), *extra])
    captured = capsys.readouterr()
    body = json.loads(captured.out) if captured.out.strip() else None
    return code, body, captured.err


def test_places_a_statefulset(fleet, tmp_path, capsys):
    code, body, _ = run(fleet, tmp_path, capsys, statefulset(32))
    assert code == 0 and body["status"] == "placed"
    assert [a["pod"] for a in body["assignments"]] == [f"train-{i}" for i in range(32)]
    assert body["solver"]["algorithm"] == "cpsat" and body["solver"]["status"] == "OPTIMAL"
    metrics = body["metrics"]
    assert set(metrics) == {"domains_used", "lower_bound", "ring_hops", "max_distance"}
    assert all(metrics["domains_used"][k] >= v for k, v in metrics["lower_bound"].items())


def test_greedy_and_custom_levels(fleet, tmp_path, capsys):
    code, body, _ = run(fleet, tmp_path, capsys, statefulset(8), "--algorithm", "greedy",
                        "--levels", "topology.kubernetes.io/zone," + LAYER2)
    assert code == 0 and body["solver"]["algorithm"] == "greedy"
    assert set(body["metrics"]["domains_used"]) == {"topology.kubernetes.io/zone", LAYER2,
                                                    "kubernetes.io/hostname"}


def test_cannot_fit_exits_2_with_reason(fleet, tmp_path, capsys):
    code, body, err = run(fleet, tmp_path, capsys, statefulset(
        64, annotations={"kueue.x-k8s.io/podset-required-topology":
                         "topology.k8s.aws/network-node-layer-3"}))
    assert code == 2 and body["status"] == "unschedulable" and body["assignments"] == []
    assert "required topology topology.k8s.aws/network-node-layer-3: 64 pods" in body["reason"]
    assert "cannot fit" in err


def test_pod_group_with_its_pods(fleet, tmp_path, capsys):
    group = {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
             "metadata": {"name": "pg", "namespace": "ml"}, "spec": {"minMember": 3}}
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"pg-{i}", "namespace": "ml",
                          "labels": {"scheduling.x-k8s.io/pod-group": "pg"}},
             "spec": {"containers": [{"name": "w", "resources": {
                 "limits": {"nvidia.com/gpu": 8}}}]}} for i in range(3)]
    code, body, _ = run(fleet, tmp_path, capsys, [group, *pods])
    assert code == 0 and sorted(a["pod"] for a in body["assignments"]) == [
        "pg-0", "pg-1", "pg-2"]


def test_indexed_job(fleet, tmp_path, capsys):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"parallelism": 4, "completionMode": "Indexed",
                    "template": statefulset()["spec"]["template"]}}
    code, body, _ = run(fleet, tmp_path, capsys, job)
    assert code == 0 and len(body["assignments"]) == 4


@pytest.mark.parametrize(("gang", "needle"), [
    ({"kind": "Service", "metadata": {"name": "x"}}, "StatefulSet, Job or PodGroup"),
    (statefulset(replicas=0), "spec.replicas"),
    (statefulset(replicas="many"), "spec.replicas"),
    (statefulset(annotations={"phalanx.dev/required-topology": "rack"}), "required_level"),
    (statefulset(gpus="eight"), "nvidia.com/gpu"),
    ({"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"replicas": 2}},
     "spec.template"),
    ({"kind": "PodGroup", "metadata": {"name": "pg"}, "spec": {"minMember": 2}}, "pending pods"),
])
def test_bad_gang_exits_1_naming_the_field(fleet, tmp_path, capsys, gang, needle):
    code, body, err = run(fleet, tmp_path, capsys, gang)
    assert code == 1 and body is None and needle in err


def test_bad_node_file_exits_1(tmp_path, capsys):
    nodes = tmp_path / "nodes.json"
    gang = tmp_path / "gang.yaml"
    gang.write_text(yaml.safe_dump(statefulset()))
    nodes.write_text("{not json")
    assert main(["place", "--nodes", str(nodes), "--gang", str(gang)]) == 1
    assert "not valid JSON or YAML" in capsys.readouterr().err
    nodes.write_text(json.dumps({"kind": "NodeList", "items": [
        {"kind": "Node", "metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "x"}}}]}))
    assert main(["place", "--nodes", str(nodes), "--gang", str(gang)]) == 1
    assert "status.allocatable.cpu" in capsys.readouterr().err
    assert main(["place", "--nodes", str(tmp_path / "missing.json"), "--gang", str(gang)]) == 1
    assert "cannot read" in capsys.readouterr().err


LAYER3 = "topology.k8s.aws/network-node-layer-3"


def test_slice_annotations_keep_each_block_of_ranks_in_one_rack(fleet, tmp_path, capsys):
    code, body, _ = run(fleet, tmp_path, capsys, statefulset(48, annotations={
        "phalanx.dev/slice-required-topology": LAYER3, "phalanx.dev/slice-size": "8"}))
    assert code == 0 and body["status"] == "placed"
    by_rank = sorted(body["assignments"], key=lambda a: a["rank"])
    for k in range(6):
        assert len({a["domain"].rsplit("/", 1)[0] for a in by_rank[k * 8:(k + 1) * 8]}) == 1
    # Kueue's slice annotations are aliases; slices that cannot fit exit 2 with the reason.
    code, body, _err = run(fleet, tmp_path, capsys, statefulset(64, annotations={
        "kueue.x-k8s.io/podset-slice-required-topology": LAYER3,
        "kueue.x-k8s.io/podset-slice-size": "64"}))
    assert code == 2 and "1 slice(s) of 64 pods" in body["reason"], body["reason"]


def test_bad_slice_annotations_name_the_field(fleet, tmp_path, capsys):
    code, _, err = run(fleet, tmp_path, capsys, statefulset(16, annotations={
        "phalanx.dev/slice-required-topology": LAYER3, "phalanx.dev/slice-size": "5"}))
    assert code == 1 and "phalanx.dev/slice-size" in err and "divisor" in err
    code, _, err = run(fleet, tmp_path, capsys, statefulset(16, annotations={
        "phalanx.dev/slice-size": "4"}))
    assert code == 1 and "phalanx.dev/slice-required-topology" in err


def _workload(**template_spec):
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "w", "namespace": "ns", "uid": "u-1"},
            "spec": {"replicas": 5, "template": {
                "metadata": {"labels": {"app": "w"}, "annotations": {"a": "b"}},
                "spec": {"schedulerName": "phalanx", "containers": [{
                    "name": "c", "resources": {"requests": {"nvidia.com/gpu": "8"}}}],
                    "tolerations": [{"key": "k", "operator": "Exists"}], **template_spec}}}}


@pytest.mark.parametrize("extra", [
    {},
    {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "w"}},
         "topologyKey": "kubernetes.io/hostname"}]}}},
    {"volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]},
])
def test_expanded_replicas_read_as_each_pod_alone(extra):
    """The shortcut for replicas of one template gives the records parsing every pod
    would, including where the spec reads the pod's own name or labels."""
    from scheduler.offline import _records_of
    from scheduler.sources.owner import OwnerSource
    from topology.records import pod_from_json

    pods = OwnerSource(("nvidia.com/gpu",)).expand(_workload(**extra))
    assert pods is not None and len(pods) == 5
    assert _records_of(pods) == [pod_from_json(pod) for pod in pods]


def test_expanded_replica_with_a_bad_label_is_named():
    from scheduler.offline import _records_of
    from scheduler.sources.owner import OwnerSource
    from topology.records import RecordError

    pods = OwnerSource(("nvidia.com/gpu",)).expand(_workload())
    assert pods is not None
    pods[3]["metadata"]["labels"] = {**pods[3]["metadata"]["labels"], "bad": 7}
    with pytest.raises(RecordError, match=r"metadata\.labels"):
        _records_of(pods)


def test_node_list_wire_path_reads_as_the_dict_path():
    """`phalanx place` reads a NodeList through msgspec structs: the same records as
    node_from_json, including taints, cordons, NotReady nodes and extra fields."""
    import orjson

    from topology.records import node_from_json, nodes_from_list_bytes

    nodes = synth_nodes(ClusterSpec(nodes=40, seed=5))
    nodes[1]["spec"] = {"unschedulable": True, "taints": [
        {"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "e", "effect": "NoExecute"}]}
    nodes[2]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    nodes[3]["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:x": {}}}]
    nodes[4]["status"]["images"] = [{"names": ["a"], "sizeBytes": 1}]
    data = orjson.dumps(as_list("NodeList", nodes))
    assert nodes_from_list_bytes(data) == [node_from_json(n) for n in nodes]
    # Not a NodeList, or a field of the wrong type: left to the dict path, which names it.
    assert nodes_from_list_bytes(orjson.dumps(as_list("PodList", []))) is None
    nodes[5]["metadata"] = "oops"
    assert nodes_from_list_bytes(orjson.dumps(as_list("NodeList", nodes))) is None


def test_node_list_with_a_non_string_label_falls_back_and_is_named():
    import orjson

    from topology.records import RecordError, node_from_json, nodes_from_list_bytes

    nodes = synth_nodes(ClusterSpec(nodes=3, seed=5))
    nodes[1]["metadata"]["labels"]["rack"] = 7
    assert nodes_from_list_bytes(orjson.dumps(as_list("NodeList", nodes))) is None
    with pytest.raises(RecordError, match=r"metadata\.labels"):
        node_from_json(nodes[1])
