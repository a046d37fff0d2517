import pytest

from topology.presets import (
    AWS_LAYER,
    GKE,
    PRESETS,
    TOPOGRAPH,
    ZONE,
    effective_levels,
    resolve_preset,
)
from topology.summary import summarize_levels
from topology.synthetic import ClusterSpec, synth_nodes


def test_named_presets():
    assert resolve_preset("aws").keys[1:] == AWS_LAYER
    assert resolve_preset("topograph").keys == TOPOGRAPH
    assert resolve_preset("gke").keys == GKE
    assert set(PRESETS) == {"aws", "topograph", "gke"}


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
