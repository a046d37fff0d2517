import pytest

from topology.presets import (
    AWS_LAYER,
    AWS_ULTRASERVER,
    GKE,
    GPU_CLIQUE,
    PRESETS,
    TOPOGRAPH_DOMAIN,
    TOPOGRAPH_LEGACY,
    ZONE,
    effective_levels,
    resolve_preset,
)
from topology.records import NodeRecord
from topology.snapshot import build_tree
from topology.summary import summarize_levels
from topology.synthetic import ClusterSpec, synth_nodes


def test_named_presets():
    assert resolve_preset("aws").keys[1:] == (*AWS_LAYER, AWS_ULTRASERVER)
    assert resolve_preset("topograph-legacy").keys == TOPOGRAPH_LEGACY
    assert resolve_preset("gke").keys == GKE
    assert set(PRESETS) == {"aws", "topograph", "topograph-legacy", "gke"}


# Label values as Topograph v1.x, GPU feature discovery and AWS write them.
TRAY = {"fabric.topograph.run/tier-1": "S-2c5eab0306555424",
        "fabric.topograph.run/tier-0": "S-2c5eab036832a42e",
        TOPOGRAPH_DOMAIN: "7f3c2a10-5b4e-4d6a-9c1e-2b8f0e6d4a91.1"}


def node(name: str, labels: dict[str, str]) -> NodeRecord:
    return NodeRecord(name, {"kubernetes.io/hostname": name, **labels}, {"nvidia.com/gpu": 4})


def test_topograph_v1_tiers_then_the_accelerator_domain_as_the_lowest_level():
    other = {**TRAY, TOPOGRAPH_DOMAIN: "7f3c2a10-5b4e-4d6a-9c1e-2b8f0e6d4a91.2"}
    tree = build_tree([node("a", TRAY), node("b", TRAY), node("c", other)],
                      resolve_preset("topograph"))
    assert tree.levels == ("fabric.topograph.run/tier-1", "fabric.topograph.run/tier-0",
                           TOPOGRAPH_DOMAIN)  # tiers 2-5 carried by no node: dropped
    assert tree.domain_count(1) == 1 and tree.domain_count(2) == 2
    assert tree.distance(0, 1) == 1 and tree.distance(0, 2) == 2  # NVLink peers first
    # Without Topograph's domain label, GPU feature discovery's clique names it.
    clique = {k: v for k, v in TRAY.items() if k != TOPOGRAPH_DOMAIN}
    tree = build_tree([node("d", {**clique, GPU_CLIQUE: "7f3c2a10.1"})],
                      resolve_preset("topograph"))
    assert tree.levels[-1] == TOPOGRAPH_DOMAIN and tree.paths[-1][0][-1] == "7f3c2a10.1"


def test_aws_ultraserver_is_the_lowest_level_only_where_nodes_carry_it():
    rack = {"topology.k8s.aws/zone-id": "use1-az1", AWS_LAYER[0]: "nn-1", AWS_LAYER[1]: "nn-2",
            AWS_LAYER[2]: "nn-3"}
    plain = build_tree([node("p5", rack)], resolve_preset("aws"))
    assert plain.levels == ("topology.k8s.aws/zone-id", *AWS_LAYER[:3])
    ultra = build_tree([node("u1", {**rack, AWS_ULTRASERVER: "us-0123456789abcdef"}),
                        node("u2", {**rack, AWS_ULTRASERVER: "us-fedcba9876543210"})],
                       resolve_preset("aws"))
    assert ultra.levels[-1] == AWS_ULTRASERVER and ultra.domain_count(4) == 2


def test_custom_preset_and_errors():
    assert resolve_preset(["rack", "row"]).keys == ("rack", "row")
    with pytest.raises(ValueError, match="preset"):
        resolve_preset("azure")
    with pytest.raises(ValueError, match="non-empty"):
        resolve_preset([])
    with pytest.raises(ValueError, match="distinct"):
        resolve_preset(["rack", "rack"])


def test_zone_falls_back_to_generic_zone_label():
    zone_level = resolve_preset("aws").levels[0]
    assert zone_level.value({ZONE: "us-east-1a"}) == "us-east-1a"
    assert zone_level.value({"topology.k8s.aws/zone-id": "use1-az1", ZONE: "x"}) == "use1-az1"


def test_layer4_only_when_some_node_carries_it():
    aws = resolve_preset("aws")
    p5 = [n["metadata"]["labels"] for n in synth_nodes(ClusterSpec(nodes=10))]
    p6 = [n["metadata"]["labels"] for n in synth_nodes(ClusterSpec(nodes=10, shape="p6"))]
    assert len(effective_levels(aws, p5)) == 4
    assert len(effective_levels(aws, p6)) == 5


def test_summary_counts_domains_by_path_and_unlabelled_nodes():
    nodes = synth_nodes(ClusterSpec(nodes=96, fanout=(1, 3, 32), ragged=0.0))
    nodes.append({"metadata": {"name": "bare", "labels": {}}})
    rows = summarize_levels(nodes, resolve_preset("aws"))
    by_key = {row.key: row for row in rows}
    assert by_key[AWS_LAYER[2]].domains == 4  # three racks + the unlabelled one
    assert by_key[AWS_LAYER[2]].max_nodes == 32
    assert by_key[AWS_LAYER[2]].unlabelled_nodes == 1
    assert by_key[AWS_LAYER[0]].domains == 2
