"""The node watch's wire path (NodeWire: msgspec structs naming only what placement reads)
must give the very records the dict path (`node_from_json`) gives, and fall back to it,
naming the field, where the structs cannot take what was sent."""

import gc
import sys

import orjson
import pytest

from scheduler.cache import ClusterCache
from topology.presets import resolve_preset
from topology.records import NodeWire, RecordError, WireNode, node_from_json
from topology.synthetic import ClusterSpec, as_list, synth_nodes


def varied_nodes() -> list[dict]:
    nodes = synth_nodes(ClusterSpec(nodes=12, seed=7))
    nodes[1]["spec"] = {"unschedulable": True, "taints": [
        {"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "e", "effect": "NoExecute"}]}
    nodes[2]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    nodes[3]["status"]["conditions"] = []
    nodes[4]["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:x": {}}}]
    nodes[5]["status"]["images"] = [{"names": ["a"], "sizeBytes": 1}]
    nodes[6]["status"]["allocatable"] = {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}
    del nodes[7]["status"]
    nodes[8]["metadata"]["resourceVersion"] = "4242"
    return nodes


def test_pages_and_events_read_as_the_dict_path():
    nodes = varied_nodes()
    wire = NodeWire()
    page = as_list("NodeList", nodes)
    page["metadata"] = {"resourceVersion": "77", "continue": "token-1"}
    items, version, token = wire.page(orjson.dumps(page))
    assert (version, token) == ("77", "token-1")
    assert all(isinstance(i, WireNode) for i in items)
    assert [wire.record(i) for i in items] == [node_from_json(n) for n in nodes]
    kind, obj = wire.event(orjson.dumps({"type": "MODIFIED", "object": nodes[8]}))
    assert kind == "MODIFIED" and isinstance(obj, WireNode)
    assert wire.record(obj) == node_from_json(nodes[8])
    assert (wire.version(obj), wire.name(obj)) == ("4242", nodes[8]["metadata"]["name"])


def test_a_non_string_label_falls_back_to_dicts_and_is_named():
    nodes = varied_nodes()
    nodes[2]["metadata"]["labels"]["rack"] = 7
    wire = NodeWire()
    items, _, _ = wire.page(orjson.dumps(as_list("NodeList", nodes)))
    assert all(isinstance(i, dict) for i in items)
    assert wire.record(items[0]) == node_from_json(nodes[0])
    with pytest.raises(RecordError, match=r"metadata\.labels"):
        wire.record(items[2])
    _, obj = wire.event(orjson.dumps({"type": "ADDED", "object": nodes[2]}))
    assert isinstance(obj, dict) and wire.name(obj) == nodes[2]["metadata"]["name"]


def test_the_cache_keeps_wire_nodes_and_names_bad_ones():
    nodes = varied_nodes()
    cache = ClusterCache(resolve_preset("aws"))
    wire = cache.node_wire
    items, _, _ = wire.page(orjson.dumps(as_list("NodeList", nodes)))
    cache.install_nodes(cache.parse_nodes(items))
    assert set(cache.nodes) == {n["metadata"]["name"] for n in nodes}
    gone = nodes[3]["metadata"]["name"]
    cache.node_event(*wire.event(orjson.dumps({"type": "DELETED", "object": nodes[3]})))
    assert gone not in cache.nodes
    bad = dict(nodes[4], status={"allocatable": {"cpu": "lots"}})
    cache.node_event(*wire.event(orjson.dumps({"type": "MODIFIED", "object": bad})))
    assert any("status.allocatable.cpu" in why for why in cache.bad_objects.values())


def test_the_wire_path_builds_a_fraction_of_the_dict_paths_objects():
    """What a re-list leaves the heap fragmented with is the garbage of decoding: the
    structs must not build the fields placement never reads (managedFields, images)."""
    nodes = synth_nodes(ClusterSpec(nodes=200, seed=3))
    for node in nodes:
        node["metadata"]["managedFields"] = [
            {"manager": f"m{i}", "fieldsV1": {f"f:{j}": {} for j in range(20)}}
            for i in range(4)]
        node["status"]["images"] = [{"names": [f"img-{i}"], "sizeBytes": i} for i in range(30)]
    data = orjson.dumps(as_list("NodeList", nodes))

    def blocks_held(decode) -> int:
        gc.collect()
        before = sys.getallocatedblocks()
        decoded = decode(data)
        held = sys.getallocatedblocks() - before
        del decoded
        return held

    assert blocks_held(NodeWire().page) * 5 < blocks_held(orjson.loads)
