"""Slices: sub-groups each inside one domain of a level, optionally one per domain,
placed with the whole gang. Property tests against an exhaustive optimum on small random
trees (every level's domain count, every slice whole, never a partial gang), and the
cases the models must get exactly."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver.request import GangRequest, Member, PodShape, SolverConfig, SubGroup
from solver.slices import slices_whole
from solver.solve import solve
from tests.unit.helpers import GPU, LEVELS, cluster

CFG = SolverConfig(seed=0, workers=1, time_limit_s=10)
RACK_KEYS = st.tuples(st.sampled_from(["z1", "z2"]), st.sampled_from(["b1", "b2", "b3"]),
                      st.sampled_from(["r1", "r2", "r3"]))


def sliced(slices: int, size: int, level: str, *, exclusive: bool = False,
           required: str | None = None, gpus: int = 8) -> GangRequest:
    count = slices * size
    members = tuple(Member(f"w-{i}", i, 0) for i in range(count))
    groups = tuple(SubGroup(f"s{k}", level, tuple(f"w-{i}" for i in range(k * size,
                                                                            (k + 1) * size)),
                            exclusive) for k in range(slices))
    return GangRequest("ns/w", (PodShape({GPU: gpus, "pods": 1}),), members, count,
                       required, None, groups)


def brute_force(capacity: dict[tuple[str, str, str], int], slices: int, size: int,
                level: int, exclusive: bool, required: int | None
                ) -> tuple[int, int, int] | None:
    """Lexicographic minimum of (zones, blocks, racks) over rack sets that can hold the
    slices: per domain of the slice level, whole slices of its chosen racks' room."""
    names = [r for r, c in capacity.items() if c > 0]
    best = None
    for k in range(1, len(names) + 1):
        for chosen in itertools.combinations(names, k):
            if required is not None and len({r[: required + 1] for r in chosen}) != 1:
                continue
            room: Counter[tuple[str, ...]] = Counter()
            for rack in chosen:
                room[rack[: level + 1]] += capacity[rack]
            units = sum(min(1, r // size) if exclusive else r // size for r in room.values())
            if units < slices or k > slices * size:
                continue
            key = (len({r[:1] for r in chosen}), len({r[:2] for r in chosen}), k)
            best = key if best is None or key < best else best
    return best


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(racks=st.dictionaries(RACK_KEYS, st.lists(st.sampled_from([0, 8]), min_size=1,
                                                 max_size=10), min_size=1, max_size=9),
       slices=st.integers(1, 5), size=st.sampled_from([2, 3, 4, 8]),
       level=st.sampled_from([0, 1, 2]), exclusive=st.booleans(),
       required=st.sampled_from([None, None, 0, 1]))
def test_slices_match_an_exhaustive_optimum_and_stay_whole(racks, slices, size, level,
                                                          exclusive, required):
    if required is not None and required > level:
        required = None  # a required level at or below the slice level: tested apart
    snap = cluster(racks)
    capacity = {r: sum(free) // 8 for r, free in racks.items()}
    expected = brute_force(capacity, slices, size, level, exclusive, required)
    request = sliced(slices, size, LEVELS[level], exclusive=exclusive,
                     required=LEVELS[required] if required is not None else None)
    result = solve(request, snap, CFG)
    if expected is None:
        assert result.status == "unschedulable"
        return
    assert result.status == "placed", result.reason
    assert result.solver.status == "OPTIMAL"
    used = result.metrics.domains_used
    assert (used["zone"], used["block"], used["rack"]) == expected
    assert len(result.assignments) == slices * size  # all or nothing
    assert slices_whole(snap.tree, request, level, result)
    per_node = Counter(a.node for a in result.assignments)
    free = snap.resource_column(GPU)
    assert all(n * 8 <= free[snap.tree.index[name]] for name, n in per_node.items())


def test_the_issue_case_48_pods_in_slices_of_8_keep_every_slice_in_one_rack():
    # Racks of 7-10 free nodes: a slice-blind placement splits slices across racks.
    racks = {("z1", "b1", f"r{i}"): [8] * n for i, n in enumerate([10, 10, 9, 9, 8, 8, 7])}
    snap = cluster(racks)
    request = sliced(6, 8, "rack")
    result = solve(request, snap, CFG)
    assert result.status == "placed" and slices_whole(snap.tree, request, 2, result)
    per_rack = Counter(a.domain for a in result.assignments)
    assert all(n % 8 == 0 for n in per_rack.values())
    # Consecutive ranks of a slice on consecutive nodes of its rack.
    by_rank = sorted(result.assignments, key=lambda a: a.rank)
    for k in range(6):
        block = by_rank[k * 8:(k + 1) * 8]
        assert len({a.domain for a in block}) == 1


def test_exclusive_slices_take_one_domain_each_and_say_what_does_not_fit():
    racks = {("z1", "b1", "r1"): [8] * 8, ("z1", "b1", "r2"): [8] * 8,
             ("z1", "b2", "r1"): [8] * 8}
    snap = cluster(racks)
    fits = solve(sliced(3, 4, "rack", exclusive=True), snap, CFG)
    assert fits.status == "placed"
    assert len({a.domain for a in fits.assignments}) == 3  # one slice per rack
    too_many = solve(sliced(4, 4, "rack", exclusive=True), snap, CFG)
    assert too_many.status == "unschedulable"
    assert "4 slice(s) of 4 pods" in too_many.reason and "3 such domain(s)" in too_many.reason


def test_a_required_level_below_the_slice_level_holds_the_slices_or_refuses_exclusive():
    racks = {("z1", "b1", "r1"): [8] * 8, ("z1", "b1", "r2"): [8] * 8}
    snap = cluster(racks)
    shared = solve(sliced(2, 4, "block", required="rack"), snap, CFG)
    assert shared.status == "placed" and shared.metrics.domains_used["rack"] == 1
    apart = solve(sliced(2, 4, "block", exclusive=True, required="rack"), snap, CFG)
    assert apart.status == "unschedulable" and "exclusive" in apart.reason


def test_even_balance_splits_8_8_where_the_tight_answer_was_15_1_and_keeps_domains():
    racks = {("z1", "b1", "r1"): [8] * 15, ("z1", "b1", "r2"): [8] * 9}
    snap = cluster(racks)
    tight = solve(sliced(16, 1, "rack"), snap, CFG)
    assert sorted(Counter(a.domain for a in tight.assignments).values()) == [1, 15]
    even = solve(replace(sliced(16, 1, "rack"), slice_balance=True), snap, CFG)
    assert sorted(Counter(a.domain for a in even.assignments).values()) == [8, 8]
    assert even.metrics.domains_used == tight.metrics.domains_used | {
        "kubernetes.io/hostname": 16}
    assert "balanced" in even.solver.note
    # A domain too small for an even share: the tight placement stays, with a note.
    small = cluster({("z1", "b1", "r1"): [8] * 15, ("z1", "b1", "r2"): [8] * 1})
    kept = solve(replace(sliced(16, 1, "rack"), slice_balance=True), small, CFG)
    assert sorted(Counter(a.domain for a in kept.assignments).values()) == [1, 15]
    assert any("slice-balance" in note for note in kept.notes)
