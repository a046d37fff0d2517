import itertools
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver.errors import BadRequest
from solver.reasons import FitCode
from solver.request import GangRequest, Member, PodShape, SolverConfig
from solver.solve import solve
from tests.unit.helpers import GPU, LEVELS, cluster, node, snapshot
from topology.records import Requirement, SelectorTerm, Taint, Toleration

CFG = SolverConfig(seed=0, workers=1, time_limit_s=10)


def gang(size, gpus=8, *, required=None, preferred=None, min_member=None, **shape_kw):
    shape = PodShape({GPU: gpus, "pods": 1}, **shape_kw)
    members = tuple(Member(f"w-{i}", i, 0) for i in range(size))
    return GangRequest("ns/w", (shape,), members, min_member or size, required, preferred)


def used(result):
    return dict(result.metrics.domains_used)


def check_no_overcommit(snap, result, gpus=8):
    per_node = Counter(a.node for a in result.assignments)
    free = snap.resource_column(GPU)
    for name, pods in per_node.items():
        assert pods * gpus <= free[snap.tree.index[name]]


def check_matches_optimum(snap, result, expected, need, gpus=8):
    """The per-level counts are the exhaustive optimum, and the placement is whole."""
    if expected is None:
        assert result.status == "unschedulable"
        return None
    assert result.status == "placed" and result.solver.status == "OPTIMAL"
    got = used(result)
    assert (got["zone"], got["block"], got["rack"]) == expected
    assert len(result.assignments) == need  # all or nothing
    check_no_overcommit(snap, result, gpus)
    return got


def test_places_in_one_rack_when_one_rack_fits():
    snap = cluster({("z1", "b1", "r1"): [8] * 8, ("z1", "b1", "r2"): [8] * 4,
                    ("z2", "b1", "r1"): [8] * 32})
    result = solve(gang(4), snap, CFG)
    assert result.status == "placed" and result.solver.status == "OPTIMAL"
    # Best fit: the 4-node rack, not the 8- or 32-node one.
    assert {a.domain for a in result.assignments} == {"z1/b1/r2"}
    assert result.metrics.ring_hops == 4 and result.metrics.max_distance == 1


def test_cpsat_beats_greedy_where_largest_first_misleads():
    # 18 pods need two blocks. Greedy takes the largest block first (bA: 10 free spread
    # over 5 racks) and finishes in bB: 6 racks. CP-SAT pairs bB and bC: 2 racks.
    snap = cluster({("z1", "bA", f"r{i}"): [8, 8] for i in range(5)}
                   | {("z1", "bB", "r1"): [8] * 9, ("z1", "bC", "r1"): [8] * 9})
    best = solve(gang(18), snap, CFG)
    greedy = solve(gang(18), snap, SolverConfig(algorithm="greedy"))
    assert used(best)["block"] == used(greedy)["block"] == 2
    assert used(best)["rack"] == 2 and best.solver.status == "OPTIMAL"
    assert used(greedy)["rack"] == 6
    assert best.metrics.lower_bound["rack"] == 2


def test_ranks_fill_racks_in_tree_order():
    snap = cluster({("z1", "b1", "r1"): [8] * 3, ("z1", "b1", "r2"): [8] * 3})
    result = solve(gang(6), snap, CFG)
    racks = [a.domain for a in sorted(result.assignments, key=lambda a: a.rank)]
    assert racks == ["z1/b1/r1"] * 3 + ["z1/b1/r2"] * 3
    assert result.metrics.ring_hops == 2 * 2 + 4 * 1


def test_all_or_nothing_and_diagnosis():
    snap = cluster({("z1", "b1", "r1"): [8, 8, 8, 0], ("z2", "b1", "r1"): [8] * 3})
    result = solve(gang(7), snap, CFG)
    assert result.status == "unschedulable" and result.to_json()["assignments"] == []
    assert result.diagnosis.code is FitCode.UNSCHEDULABLE  # an empty cluster would hold it
    assert "7 pods of 8 nvidia.com/gpu; the whole cluster fits 6" in result.reason
    too_big = solve(gang(50), snap, CFG)
    assert too_big.diagnosis.code is FitCode.UNRESOLVABLE


def test_required_level_is_honoured_or_pending_with_reason():
    snap = cluster({("z1", "b1", "r1"): [8] * 4, ("z1", "b1", "r2"): [8] * 4,
                    ("z1", "b2", "r1"): [8] * 6})
    in_block = solve(gang(8, required="block"), snap, CFG)
    assert used(in_block)["block"] == 1 and used(in_block)["rack"] == 2
    in_rack = solve(gang(6, required="rack"), snap, CFG)
    assert {a.domain for a in in_rack.assignments} == {"z1/b2/r1"}
    pending = solve(gang(7, required="rack"), snap, CFG)
    assert pending.status == "unschedulable"
    assert ("required topology rack: 7 pods of 8 nvidia.com/gpu; the largest rack domain "
            "fits 6 (z1/b2/r1)") in pending.reason


def test_preferred_level_reported():
    snap = cluster({("z1", "b1", "r1"): [8] * 4, ("z1", "b2", "r1"): [8] * 4})
    met = solve(gang(4, preferred="block"), snap, CFG)
    assert met.preferred_met is True
    unmet = solve(gang(8, preferred="block"), snap, CFG)
    assert unmet.status == "placed" and unmet.preferred_met is False


def test_filters_exclude_and_count_reasons():
    nodes = [node("ok", ("z", "b", "r")),
             node("tainted", ("z", "b", "r"), taints=(Taint("gpu", "bad", "NoSchedule"),)),
             node("soft", ("z", "b", "r"), taints=(Taint("x", "", "PreferNoSchedule"),)),
             node("cordoned", ("z", "b", "r"), unschedulable=True),
             node("down", ("z", "b", "r"), ready=False),
             node("other", ("z", "b", "r"), extra={"pool": "cpu"}),
             node("busy", ("z", "b", "r"))]
    snap = snapshot(nodes, {"busy": {GPU: 4}})
    affinity = (SelectorTerm((Requirement("pool", "DoesNotExist"),)),)
    result = solve(gang(3, affinity=affinity), snap, CFG)
    assert result.status == "unschedulable"
    assert {str(r): n for r, n in result.diagnosis.excluded.items()} == {
        "node(s) had untolerated taint {gpu=bad:NoSchedule}": 1,
        "node(s) were unschedulable": 1, "node(s) were not ready": 1,
        "node(s) didn't match Pod's node affinity/selector": 1,
        "Insufficient nvidia.com/gpu": 1}
    tolerant = solve(gang(3, affinity=affinity, tolerations=(Toleration("gpu", "Exists"),)),
                     snap, CFG)
    assert {a.node for a in tolerant.assignments} == {"ok", "tainted", "soft"}
    selected = solve(gang(1, node_selector={"pool": "cpu"}), snap, CFG)
    assert [a.node for a in selected.assignments] == ["other"]


def test_several_pods_per_node_and_no_overcommit():
    snap = cluster({("z1", "b1", "r1"): [8, 3, 2], ("z1", "b1", "r2"): [5]})
    result = solve(gang(10, gpus=1), snap, CFG)
    assert result.status == "placed"
    per_node = Counter(a.node for a in result.assignments)
    free = snap.resource_column(GPU)
    assert all(count <= free[snap.tree.index[n]] for n, count in per_node.items())
    assert used(result)["rack"] == 1


def test_min_member_places_the_largest_rank_prefix_that_fits():
    snap = cluster({("z1", "b1", "r1"): [8] * 5})
    result = solve(gang(8, min_member=4), snap, CFG)
    assert result.status == "placed" and len(result.assignments) == 5
    assert result.unplaced == ("w-5", "w-6", "w-7")
    assert solve(gang(8, min_member=6), snap, CFG).status == "unschedulable"


def test_heterogeneous_gang_launcher_and_workers():
    snap = snapshot([node(f"g{i}", ("z", "b", "r1")) for i in range(4)]
                    + [node("c0", ("z", "b", "r1"), gpus=0)])
    launcher = PodShape({"cpu": 4000, "pods": 1}, name="launcher")
    worker = PodShape({GPU: 8, "pods": 1}, name="worker")
    members = (Member("launcher", 0, 0), *(Member(f"w-{i}", i + 1, 1) for i in range(4)))
    request = GangRequest("ns/mpi", (launcher, worker), members, 5)
    result = solve(request, snap, CFG)
    assert result.status == "placed"
    placed = {a.pod: a.node for a in result.assignments}
    assert placed["launcher"] == "c0"
    assert sorted(placed[f"w-{i}"] for i in range(4)) == ["g0", "g1", "g2", "g3"]


@pytest.mark.parametrize(("request_kwargs", "field"), [
    ({"required": "row"}, "required_level"), ({"min_member": 9}, "minMember"),
])
def test_bad_requests_name_the_field(request_kwargs, field):
    snap = cluster({("z1", "b1", "r1"): [8] * 2})
    with pytest.raises(BadRequest, match=field):
        solve(gang(2, **request_kwargs), snap, CFG)
    with pytest.raises(BadRequest, match="members"):
        solve(GangRequest("ns/x", (PodShape({GPU: 1}),), (), 1), snap, CFG)


# -- property: CP-SAT's per-level counts equal an exhaustive optimum -----------------

def brute_force(racks, need, required=None):
    """Lexicographic minimum of (zones, blocks, racks) over every feasible rack set,
    the racks' capacities being their free whole-node slots."""
    names = list(racks)
    best = None
    for k in range(1, len(names) + 1):
        for chosen in itertools.combinations(names, k):
            if sum(racks[r] for r in chosen) < need or k > need:
                continue
            if required is not None and len({r[: required + 1] for r in chosen}) != 1:
                continue
            key = (len({r[:1] for r in chosen}), len({r[:2] for r in chosen}), k)
            best = key if best is None or key < best else best
    return best


racks_strategy = st.dictionaries(
    keys=st.tuples(st.sampled_from(["z1", "z2"]), st.sampled_from(["b1", "b2", "b3"]),
                   st.sampled_from(["r1", "r2", "r3"])),
    values=st.lists(st.sampled_from([0, 8]), min_size=1, max_size=12),
    min_size=1, max_size=10)


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(racks=racks_strategy, need=st.integers(1, 40),
       required=st.sampled_from([None, None, 0, 1, 2]))
def test_counts_match_exhaustive_optimum(racks, need, required):
    snap = cluster(racks)
    capacity = {r: sum(free) // 8 for r, free in racks.items()}
    expected = brute_force(capacity, need, required)
    request = gang(need, required=LEVELS[required] if required is not None else None)
    result = solve(request, snap, CFG)
    got = check_matches_optimum(snap, result, expected, need)
    if got is None:
        return
    if required is not None:
        assert got[LEVELS[required]] == 1
    for level, bound in result.metrics.lower_bound.items():
        assert bound is None or got[level] >= bound


@settings(max_examples=40, deadline=None, derandomize=True)
@given(racks=racks_strategy, need=st.integers(1, 30))
def test_greedy_is_feasible_and_never_better(racks, need):
    snap = cluster(racks)
    best = solve(gang(need), snap, CFG)
    greedy = solve(gang(need), snap, SolverConfig(algorithm="greedy"))
    assert best.status == greedy.status
    if best.status == "placed":
        key = lambda r: tuple(used(r)[level] for level in LEVELS)  # noqa: E731
        assert key(best) <= key(greedy)
        check_no_overcommit(snap, greedy)


partial_racks = st.dictionaries(
    keys=st.tuples(st.sampled_from(["z1", "z2"]), st.sampled_from(["b1", "b2", "b3"]),
                   st.sampled_from(["r1", "r2", "r3"])),
    values=st.lists(st.integers(0, 8), min_size=1, max_size=10),
    min_size=1, max_size=9)


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(racks=partial_racks, gpus=st.sampled_from([1, 2, 4, 8]), need=st.integers(1, 40),
       required=st.sampled_from([None, None, 1, 2]))
def test_counts_match_exhaustive_optimum_with_partly_busy_nodes(racks, gpus, need, required):
    """Random free GPUs per node and pods of 1-8 GPUs: several pods may share a node."""
    snap = cluster(racks)
    capacity = {r: sum(f // gpus for f in free) for r, free in racks.items()}
    expected = brute_force(capacity, need, required)
    result = solve(gang(need, gpus=gpus,
                        required=LEVELS[required] if required is not None else None), snap, CFG)
    check_matches_optimum(snap, result, expected, need, gpus)


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=6), min_size=1, max_size=5),
       st.data())
def test_whole_node_fill_picks_the_nodes_the_general_rule_picks(racks, data):
    """The numpy fill for one pod per node equals the gain-ordered rule it shortcuts."""
    import numpy as np

    from solver.cpsat.folded import _fill_by_gain, _fill_whole_nodes

    snap = cluster({("z1", "b1", f"r{i}"): [8 if free else 0 for free in caps]
                    for i, caps in enumerate(racks)})
    tree = snap.tree
    node_caps = np.asarray([1 if flag else 0 for caps in racks for flag in caps],
                           dtype=np.int64)
    chosen = [r for r, caps in enumerate(racks) if any(caps)]
    if not chosen:
        return
    quota = np.asarray([sum(caps) for caps in racks], dtype=np.int64)
    want = data.draw(st.integers(len(chosen), int(quota[chosen].sum())))
    fast = _fill_whole_nodes(tree, len(LEVELS) - 1, node_caps, chosen, want, quota)
    assert fast == _fill_by_gain(tree, len(LEVELS) - 1, node_caps, chosen, want, quota)
