"""Replacement members next to their running peers (solver.nearby)."""

from __future__ import annotations

from solver.nearby import place_near
from solver.request import GangRequest, Member, PodShape
from tests.unit.helpers import GPU, cluster


def replacements(ranks: list[int], size: int, gpus: int = 8) -> GangRequest:
    members = tuple(Member(f"w-{r}", r, 0) for r in ranks)
    return GangRequest("ns/w", (PodShape({GPU: gpus}),), members, len(members))


def rack(node: str) -> str:
    return node.rsplit("-n", 1)[0]


def test_replacement_lands_in_the_bottom_domain_of_its_rank_neighbours():
    # Ranks 0-7 but 3 run in z/b1/r1 (one node free there), ranks 8-15 in z/b1/r2 (one
    # free too, and more peers); z/b2/r3 is empty and roomier. Rank 3's neighbours (2, 4)
    # are in r1: it goes there.
    snap = cluster({("z", "b1", "r1"): [0] * 7 + [8], ("z", "b1", "r2"): [0] * 8 + [8],
                    ("z", "b2", "r3"): [8] * 16})
    peers = {r: f"z-b1-r1-n{i}" for i, r in enumerate([0, 1, 2, 4, 5, 6, 7])} | {
        r: f"z-b1-r2-n{r - 8}" for r in range(8, 16)}
    placement = place_near(replacements([3], 16), snap, peers)
    assert placement is not None and placement.assignments[0].node == "z-b1-r1-n7"
    placement = place_near(replacements([12], 16), snap, {r: n for r, n in peers.items()
                                                           if r != 12})
    assert placement is not None and rack(placement.assignments[0].node) == "z-b1-r2"


def test_without_room_in_the_peers_rack_the_nearest_domain_wins():
    # r1 is full; r2 (same block, distance 2) has room, so does r3 in another block
    # (distance 3): the replacement goes to r2 even though r3 is roomier.
    snap = cluster({("z", "b1", "r1"): [0] * 8, ("z", "b1", "r2"): [0] * 6 + [8],
                    ("z", "b2", "r3"): [8] * 16})
    peers = {r: f"z-b1-r1-n{r}" for r in range(8) if r != 3}
    placement = place_near(replacements([3], 8), snap, peers)
    assert placement is not None
    assert placement.assignments[0].node == "z-b1-r2-n6"
    assert placement.solver.algorithm == "nearby"
    # Whole-gang metrics: two racks, one block.
    assert placement.metrics.domains_used["rack"] == 2
    assert placement.metrics.domains_used["block"] == 1


def test_several_replacements_follow_each_other_and_never_overcommit():
    snap = cluster({("z", "b1", "r1"): [0] * 4 + [8, 4, 4], ("z", "b2", "r2"): [8] * 8})
    peers = {r: f"z-b1-r1-n{r}" for r in range(4)}
    placement = place_near(replacements([4, 5, 6], 7, gpus=4), snap, peers)
    assert placement is not None and len(placement.assignments) == 3
    per_node: dict[str, int] = {}
    for a in placement.assignments:
        per_node[a.node] = per_node.get(a.node, 0) + 4
    free = {"z-b1-r1-n4": 8, "z-b1-r1-n5": 4, "z-b1-r1-n6": 4}
    assert all(per_node[n] <= free.get(n, 0) for n in per_node), per_node
    assert {rack(a.node) for a in placement.assignments} == {"z-b1-r1"}


def test_failed_nodes_are_avoided_and_too_little_room_returns_none():
    snap = cluster({("z", "b1", "r1"): [0] * 3 + [8, 8]})
    peers = {0: "z-b1-r1-n0", 1: "z-b1-r1-n1", 2: "z-b1-r1-n2"}
    placement = place_near(replacements([3], 4), snap, peers,
                           avoid={"w-3": frozenset({"z-b1-r1-n3"})})
    assert placement is not None and placement.assignments[0].node == "z-b1-r1-n4"
    assert place_near(replacements([3, 4, 5], 6), snap, peers) is None
