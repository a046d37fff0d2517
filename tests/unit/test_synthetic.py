from collections import Counter

import pytest

from topology.presets import AWS_LAYER, AWS_ZONE_ID, ZONE
from topology.synthetic import (
    EFA,
    GPU,
    KWOK_ANNOTATION,
    NEURON,
    ClusterSpec,
    as_list,
    synth_load,
    synth_nodes,
)


def labels(node):
    return node["metadata"]["labels"]


def test_same_seed_same_cluster_other_seed_other_ids():
    spec = ClusterSpec(nodes=300, seed=3, occupancy=0.5)
    assert synth_nodes(spec) == synth_nodes(spec)
    assert synth_load(spec, synth_nodes(spec)) == synth_load(spec, synth_nodes(spec))
    other = synth_nodes(ClusterSpec(nodes=300, seed=4))
    assert labels(other[0])[AWS_LAYER[0]] != labels(synth_nodes(spec)[0])[AWS_LAYER[0]]


def test_p5_nodes_carry_aws_labels_and_allocatable():
    nodes = synth_nodes(ClusterSpec(nodes=100))
    assert len(nodes) == 100
    assert len({n["metadata"]["name"] for n in nodes}) == 100
    for node in nodes:
        node_labels = labels(node)
        assert node_labels["node.kubernetes.io/instance-type"] == "p5.48xlarge"
        assert node_labels[AWS_ZONE_ID].startswith("usw2-az")
        assert node_labels[ZONE].startswith("us-west-2")
        for key in AWS_LAYER[:3]:
            assert node_labels[key].startswith("nn-") and len(node_labels[key]) == 20
        assert AWS_LAYER[3] not in node_labels
        assert node["status"]["allocatable"][GPU] == "8"
        assert node["status"]["allocatable"][EFA] == "32"
        assert node["metadata"]["annotations"][KWOK_ANNOTATION] == "fake"


def test_fanout_bounds_domain_sizes_and_ragged_racks():
    spec = ClusterSpec(nodes=5000, fanout=(4, 8, 32), ragged=0.25, seed=1)
    nodes = synth_nodes(spec)
    per_l3 = Counter(tuple(labels(n)[k] for k in AWS_LAYER[:3]) for n in nodes)
    sizes = sorted(per_l3.values())
    assert max(sizes) <= 32
    assert min(sizes[1:]) >= 24  # the last rack may be cut short by the node count
    assert len(set(sizes)) > 1, "racks should be ragged, not all identical"
    per_l2 = Counter(tuple(labels(n)[k] for k in AWS_LAYER[:2]) for n in nodes)
    assert max(Counter(k[:2] for k in per_l3).values()) <= 8
    assert max(Counter(k[:1] for k in per_l2).values()) <= 4


def test_ragged_zero_gives_full_domains():
    nodes = synth_nodes(ClusterSpec(nodes=64 * 3, fanout=(2, 2, 16), ragged=0.0))
    per_l3 = Counter(labels(n)[AWS_LAYER[2]] for n in nodes)
    assert set(per_l3.values()) == {16}


def test_top_level_blocks_spread_over_zones():
    nodes = synth_nodes(ClusterSpec(nodes=400, fanout=(2, 2, 16), ragged=0.0, zones=3))
    zone_of_block = {labels(n)[AWS_LAYER[0]]: labels(n)[AWS_ZONE_ID] for n in nodes}
    assert len(set(zone_of_block.values())) == 3


def test_p6_has_four_layers_and_trn2_has_neuron():
    p6 = synth_nodes(ClusterSpec(nodes=50, shape="p6"))
    assert all(AWS_LAYER[3] in labels(n) for n in p6)
    trn2 = synth_nodes(ClusterSpec(nodes=10, shape="trn2"))
    assert trn2[0]["status"]["allocatable"][NEURON] == "16"
    assert GPU not in trn2[0]["status"]["allocatable"]


def test_load_is_bound_fits_its_node_and_matches_occupancy():
    spec = ClusterSpec(nodes=4000, occupancy=0.5, seed=11)
    nodes = synth_nodes(spec)
    pods = synth_load(spec, nodes)
    names = {n["metadata"]["name"] for n in nodes}
    used = Counter()
    for pod in pods:
        assert pod["spec"]["nodeName"] in names
        requests = pod["spec"]["containers"][0]["resources"]["requests"]
        used[pod["spec"]["nodeName"]] += int(requests[GPU])
    assert all(1 <= gpus <= 8 for gpus in used.values())
    busy_fraction = len(used) / len(nodes)
    assert 0.35 < busy_fraction < 0.65
    full = sum(1 for gpus in used.values() if gpus == 8)
    assert 0 < full < len(used), "busy nodes are a mix of full and partial"


def test_load_is_correlated_by_bottom_domain():
    spec = ClusterSpec(nodes=4096, occupancy=0.5, seed=2, ragged=0.0)
    nodes = synth_nodes(spec)
    busy = {p["spec"]["nodeName"] for p in synth_load(spec, nodes)}
    per_domain = Counter()
    sizes = Counter()
    for node in nodes:
        domain = labels(node)[AWS_LAYER[2]]
        sizes[domain] += 1
        per_domain[domain] += node["metadata"]["name"] in busy
    fractions = [per_domain[d] / sizes[d] for d in sizes]
    assert sum(f < 0.15 for f in fractions) > 0 and sum(f > 0.85 for f in fractions) > 0


def test_zero_occupancy_means_no_load():
    spec = ClusterSpec(nodes=100)
    assert synth_load(spec, synth_nodes(spec)) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": -1}, "nodes"),
        ({"nodes": 10, "occupancy": 1.5}, "occupancy"),
        ({"nodes": 10, "shape": "h100"}, "shape"),
        ({"nodes": 10, "fanout": (2, 2)}, "fanout"),
        ({"nodes": 10, "fanout": (2, 0, 2)}, "fanout"),
        ({"nodes": 10, "zones": 0}, "zones"),
        ({"nodes": 10, "ragged": 1.0}, "ragged"),
    ],
)
def test_bad_spec_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        synth_nodes(ClusterSpec(**kwargs))


def test_as_list_wraps_like_kubectl():
    wrapped = as_list("NodeList", synth_nodes(ClusterSpec(nodes=2)))
    assert wrapped["kind"] == "NodeList" and len(wrapped["items"]) == 2
