import gc
import weakref

import numpy as np

from tests.unit.helpers import GPU, LEVELS, node, snapshot
from topology.presets import AWS_LAYER, resolve_preset
from topology.records import NodeRecord, PodRecord
from topology.snapshot import build_snapshot, usage_from_pods


def small():
    return snapshot([
        node("b", ("z1", "b1", "r2")), node("a", ("z1", "b1", "r1")),
        node("c", ("z1", "b2", "r1")), node("d", ("z2", "b1", "r1")),
        node("e", ("z1", "b1", "r1")),
    ], used={"a": {GPU: 3}})


def test_tree_order_and_paths_are_identities():
    snap = small()
    tree = snap.tree
    assert [n.name for n in tree.nodes] == ["a", "e", "b", "c", "d"]
    # "b1" under z1 and "b1" under z2 are different domains: identity is the path.
    assert tree.paths[1] == (("z1", "b1"), ("z1", "b2"), ("z2", "b1"))
    assert tree.paths[2][int(tree.domain_of[2][tree.index["d"]])] == ("z2", "b1", "r1")


def test_distance_follows_design():
    tree = small().tree
    i = tree.index
    assert tree.distance(i["a"], i["a"]) == 0
    assert tree.distance(i["a"], i["e"]) == 1  # same rack
    assert tree.distance(i["a"], i["b"]) == 2  # same block
    assert tree.distance(i["a"], i["c"]) == 3  # same zone
    assert tree.distance(i["a"], i["d"]) == 4  # different zones: L + 1


def test_free_capacity_subtracts_bound_pods_of_any_scheduler():
    pods = [PodRecord("ns", "p1", node_name="a", requests={GPU: 2, "pods": 1}),
            PodRecord("ns", "p2", node_name="a", requests={GPU: 1, "pods": 1},
                      scheduler_name="default-scheduler"),
            PodRecord("ns", "p3", node_name="a", requests={GPU: 8}, phase="Succeeded"),
            PodRecord("ns", "p4", requests={GPU: 8})]
    assert usage_from_pods(pods) == {"a": {GPU: 3, "pods": 2}}
    snap = small()
    gpu = snap.resource_column(GPU)
    assert gpu[snap.tree.index["a"]] == 5 and gpu[snap.tree.index["b"]] == 8
    assert snap.resource_column("aws.amazon.com/neuron") is None
    assert snap.tree.per_domain(0, gpu).tolist() == [5 + 8 + 8 + 8, 8]


def test_unlabelled_nodes_are_singletons_and_reported():
    snap = snapshot([node("a", ("z1", "b1", "r1")), node("x", ("z1",)), node("y", ("z1",))])
    tree = snap.tree
    assert tree.unlabelled == ("x", "y")
    ix, iy, ia = tree.index["x"], tree.index["y"], tree.index["a"]
    assert tree.distance(ix, iy) == 3  # share only the zone
    assert tree.node_path(ix) == ("z1", "<unlabelled:x>", "<unlabelled:x>")
    assert tree.distance(ia, ix) == 3


def test_aws_preset_depth_comes_from_labels():
    aws = resolve_preset("aws")
    def aws_node(name, layers):
        labels = {"topology.k8s.aws/zone-id": "usw2-az1"}
        labels.update(zip(AWS_LAYER, layers, strict=False))
        return NodeRecord(name, labels, {GPU: 8})
    p5 = build_snapshot([aws_node("a", ("l1", "l2", "l3"))], {}, aws)
    assert len(p5.levels) == 4
    p6 = build_snapshot([aws_node("a", ("l1", "l2", "l3", "l4")),
                         aws_node("b", ("l1", "l2", "l3"))], {}, aws)
    assert len(p6.levels) == 5 and p6.tree.unlabelled == ("b",)


def test_parents_and_paths_form_one_tree():
    tree = small().tree
    for level in range(1, tree.depth):
        for domain, path in enumerate(tree.paths[level]):
            parent = int(tree.parent_of[level][domain])
            assert tree.paths[level - 1][parent] == path[:-1]
    for index in range(len(tree.nodes)):  # each node sits in its path's domains
        path = tree.node_path(index)
        for level in range(tree.depth):
            assert tree.paths[level][int(tree.domain_of[level][index])] == path[: level + 1]
    assert tree.node_path(tree.index["a"]) == ("z1", "b1", "r1")


def test_children_and_members_are_contiguous_ranges():
    tree = small().tree
    assert list(tree.children(0, 0)) == [0, 1]
    assert [tree.nodes[i].name for i in tree.members(2, 0)] == ["a", "e"]
    assert np.all(np.diff(tree.domain_of[2]) >= 0)
    assert tree.levels == LEVELS


def test_a_tree_no_one_uses_is_freed_with_its_columns():
    """Columns are memoised on the tree, not in a cache keyed by it: once the nodes
    change and no snapshot holds the old tree, it is garbage (a module-level cache kept
    up to 64 stale trees alive: 252 MiB at 100,000 nodes)."""
    tree = small().tree
    first = tree.allocatable(GPU)
    assert tree.allocatable(GPU) is first  # computed once per tree
    codes = tree.label_codes(LEVELS[0])
    assert codes[tree.index["a"]] == codes[tree.index["c"]] != codes[tree.index["d"]]
    alive = weakref.ref(tree)
    del tree, first, codes
    gc.collect()
    assert alive() is None
