"""Preemption's victim choice: the cases the issue names, and a property test against a
brute-force minimum over every subset of candidates (each checked by the placement
solver itself on the room it frees)."""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver.preempt import (
    Candidate,
    NoPreemption,
    PreemptCode,
    Preemption,
    VictimCost,
    choose_victims,
    cost_of,
)
from solver.request import GangRequest, Member, PodShape, SolverConfig
from solver.result import Placement
from solver.solve import solve
from tests.unit.helpers import GPU, LEVELS, node
from topology.presets import resolve_preset
from topology.records import PodRecord
from topology.snapshot import TopologySnapshot, build_snapshot, without

CFG = SolverConfig(seed=0, workers=1, time_limit_s=10)
ACCELERATORS = frozenset({GPU})


def running(name: str, node_name: str, gpus: int = 8, priority: int = 0) -> PodRecord:
    return PodRecord("ns", name, node_name=node_name, phase="Running",
                     requests={GPU: gpus, "pods": 1}, priority=priority)


def cluster_with(racks: dict[str, int], pods: list[PodRecord]) -> TopologySnapshot:
    """racks: rack name -> node count (all in zone z, block b); nodes `<rack>-n<i>`."""
    nodes = [node(f"{rack}-n{i}", ("z", "b", rack)) for rack, n in racks.items()
             for i in range(n)]
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        slot = used.setdefault(pod.node_name, {})
        for r, amount in pod.requests.items():
            slot[r] = slot.get(r, 0) + amount
    return build_snapshot(nodes, used, resolve_preset(list(LEVELS)),
                          [(p.node_name, p) for p in pods])


def gang(size: int, gpus: int = 8, required: str | None = None) -> GangRequest:
    members = tuple(Member(f"hi-{i}", i, 0) for i in range(size))
    return GangRequest("ns/hi", (PodShape({GPU: gpus, "pods": 1}),), members, size,
                       required)


def gang_on(name: str, nodes: list[str], priority: int = 0, gpus: int = 8) -> Candidate:
    pods = tuple(running(f"{name}-{i}", n, gpus, priority) for i, n in enumerate(nodes))
    return Candidate(f"Gang ns/{name}", priority, pods, gang=True)


def test_a_rack_is_cleared_by_evicting_exactly_the_gang_in_it() -> None:
    """The issue's case: two low-priority gangs fill racks of 31 and 9 nodes; a 20-pod
    gang that requires one rack evicts the 31-pod gang, all of it, nothing else."""
    big = gang_on("big", [f"r1-n{i}" for i in range(31)])
    small = gang_on("small", [f"r2-n{i}" for i in range(9)])
    snap = cluster_with({"r1": 31, "r2": 9}, [*big.pods, *small.pods])
    assert solve(gang(20, required="rack"), snap, CFG).status == "unschedulable"
    result = choose_victims(gang(20, required="rack"), snap, [big, small], 100, CFG,
                            ACCELERATORS)
    assert isinstance(result, Preemption), result
    assert [c.name for c in result.chosen.victims] == ["Gang ns/big"]
    assert result.status == "OPTIMAL"
    assert {a.node.split("-")[0] for a in result.placement.assignments} == {"r1"}
    assert result.chosen.cost == VictimCost(0, 1, 31 * 8, 31)


def test_fewer_victims_beat_fewer_gpus_and_lower_priority_beats_both() -> None:
    """Two 2-pod gangs or one 4-pod gang free the same rack: the single victim wins;
    when that one has the higher priority, the two lower ones are taken instead."""
    a = gang_on("a", ["r1-n0", "r1-n1"])
    b = gang_on("b", ["r1-n2", "r1-n3"])
    c = gang_on("c", [f"r2-n{i}" for i in range(4)])
    snap = cluster_with({"r1": 4, "r2": 4}, [*a.pods, *b.pods, *c.pods])
    request = gang(4, required="rack")
    one = choose_victims(request, snap, [a, b, c], 10, CFG, ACCELERATORS)
    assert isinstance(one, Preemption)
    assert [v.name for v in one.chosen.victims] == ["Gang ns/c"]
    assert one.runner_up is not None
    assert sorted(v.name for v in one.runner_up.victims) == ["Gang ns/a", "Gang ns/b"]
    c_higher = gang_on("c", [f"r2-n{i}" for i in range(4)], priority=5)
    snap = cluster_with({"r1": 4, "r2": 4}, [*a.pods, *b.pods, *c_higher.pods])
    two = choose_victims(request, snap, [a, b, c_higher], 10, CFG, ACCELERATORS)
    assert isinstance(two, Preemption)
    assert sorted(v.name for v in two.chosen.victims) == ["Gang ns/a", "Gang ns/b"]


def test_equal_or_higher_priority_is_never_a_victim() -> None:
    a = gang_on("a", ["r1-n0", "r1-n1"], priority=10)
    snap = cluster_with({"r1": 2}, list(a.pods))
    result = choose_victims(gang(2), snap, [a], 10, CFG, ACCELERATORS)
    assert isinstance(result, NoPreemption) and result.code is PreemptCode.NO_CANDIDATES


def test_no_preemption_when_even_every_victim_gone_is_not_enough() -> None:
    a = gang_on("a", ["r1-n0", "r1-n1"])
    snap = cluster_with({"r1": 2, "r2": 2}, list(a.pods))
    result = choose_victims(gang(3, required="rack"), snap, [a], 10, CFG, ACCELERATORS)
    assert isinstance(result, NoPreemption) and result.code is PreemptCode.WOULD_NOT_FIT
    assert "would not fit even with all 1" in result.message


def test_partial_nodes_need_both_victims_on_a_node() -> None:
    """Two 4-GPU single pods share each node: an 8-GPU pod needs both gone (the model's
    subsets), and a single pod is a victim on its own."""
    pods = [running(f"s{i}", f"r1-n{i // 2}", gpus=4) for i in range(4)]
    singles = [Candidate(f"Pod ns/{p.name}", 0, (p,)) for p in pods]
    snap = cluster_with({"r1": 2}, pods)
    result = choose_victims(gang(1), snap, singles, 1, CFG, ACCELERATORS)
    assert isinstance(result, Preemption)
    victims = sorted(v.name for v in result.chosen.victims)
    assert victims in (["Pod ns/s0", "Pod ns/s1"], ["Pod ns/s2", "Pod ns/s3"])


# -- property: the cost equals a brute-force minimum ----------------------------------
@st.composite
def scenes(draw: st.DrawFn) -> tuple[dict[str, int], list[Candidate], GangRequest, int]:
    racks = {f"r{k}": draw(st.integers(1, 3)) for k in range(draw(st.integers(1, 3)))}
    slots = [(f"{rack}-n{i}", half) for rack, n in racks.items() for i in range(n)
             for half in (0, 1)]
    free = list(slots)
    units: list[Candidate] = []
    for u in range(draw(st.integers(1, 6))):
        if not free:
            break
        size = draw(st.integers(1, min(3, len(free))))
        gpus = draw(st.sampled_from([4, 8]))
        taken = draw(st.permutations(free))[:size]
        pods = []
        for i, (where, half) in enumerate(taken):
            if gpus == 8:
                if (where, 1 - half) not in free:
                    continue
                free.remove((where, 1 - half))
            free.remove((where, half))
            pods.append(running(f"u{u}-{i}", where, gpus, draw(st.integers(0, 2))))
        if pods:
            priority = max(p.priority for p in pods)
            units.append(Candidate(f"u{u}", priority, tuple(pods), gang=len(pods) > 1))
    request = gang(draw(st.integers(1, 4)), draw(st.sampled_from([4, 8])),
                   draw(st.sampled_from([None, "rack", "block"])))
    return racks, units, request, draw(st.integers(1, 3))


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes())
def test_victim_cost_equals_a_brute_force_minimum(
        scene: tuple[dict[str, int], list[Candidate], GangRequest, int]) -> None:
    racks, units, request, priority = scene
    snap = cluster_with(racks, [p for u in units for p in u.pods])
    pool = [u for u in units if u.priority < priority]
    best: VictimCost | None = None
    for k in range(len(pool) + 1):
        for subset in itertools.combinations(pool, k):
            gone = [p for u in subset for p in u.pods]
            if isinstance(solve(request, without(snap, gone), CFG), Placement):
                cost = cost_of(subset, ACCELERATORS)
                best = cost if best is None or cost < best else best
    result = choose_victims(request, snap, units, priority, CFG, ACCELERATORS)
    if best is None:
        assert isinstance(result, NoPreemption)
        return
    if best.victims == 0:
        return  # fits without preemption: the shell never asks
    assert isinstance(result, Preemption), result
    assert all(v.priority < priority for v in result.chosen.victims)
    assert isinstance(solve(request, without(snap, result.chosen.pods), CFG), Placement)
    assert result.chosen.cost == best, (result.chosen, best)
