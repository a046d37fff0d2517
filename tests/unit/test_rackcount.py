"""The rack stage's threshold decomposition against an exhaustive search over every set
of parents the counts allow."""

import itertools
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver.cpsat.rackcount import fewest_racks
from tests.unit.helpers import cluster
from topology.snapshot import DomainTree

ZONE, BLOCK, RACK = 0, 1, 2


def ancestor(tree: DomainTree, level: int, domain: int, upper: int) -> int:
    for lvl in range(level, upper, -1):
        domain = int(tree.parent_of[lvl][domain])
    return domain


def exhaustive(tree, viable, counts, racks, caps, need):
    """Fewest racks over every set of `counts[BLOCK]` viable blocks in `counts[ZONE]`
    viable zones: each used block's largest rack, then the largest other racks."""
    best = None
    for blocks in itertools.combinations(viable[BLOCK].tolist(), counts[BLOCK]):
        zones = {ancestor(tree, BLOCK, b, ZONE) for b in blocks}
        if len(zones) != counts[ZONE] or not zones <= set(viable[ZONE].tolist()):
            continue
        heads, extras = [], []
        for block in blocks:
            mine = sorted((int(caps[r]) for r in racks if tree.parent_of[RACK][r] == block),
                          reverse=True)
            heads.append(mine[0])
            extras += mine[1:]
        total, used = sum(heads), len(heads)
        for cap in sorted(extras, reverse=True):
            if total >= need:
                break
            total, used = total + cap, used + 1
        if total >= need and used <= need:
            best = used if best is None else min(best, used)
    return best


@st.composite
def instances(draw):
    shape = {(f"z{z}", f"b{b}", f"r{r}"): [8]
             for z in range(draw(st.integers(1, 3)))
             for b in range(draw(st.integers(1, 3)))
             for r in range(draw(st.integers(1, 4)))}
    tree = cluster(shape).tree
    caps = np.asarray(draw(st.lists(st.integers(0, 7), min_size=tree.domain_count(RACK),
                                    max_size=tree.domain_count(RACK))), dtype=np.int64)
    racks = np.flatnonzero(caps > 0)
    blocks = np.unique(tree.parent_of[RACK][racks])
    if len(blocks) == 0:
        return None
    chosen = draw(st.lists(st.sampled_from(blocks.tolist()), min_size=1, unique=True))
    viable_blocks = np.asarray(sorted(chosen), dtype=np.int64)
    viable_zones = np.unique(tree.parent_of[BLOCK][viable_blocks])
    racks = racks[np.isin(tree.parent_of[RACK][racks], viable_blocks)]
    zones = draw(st.integers(1, len(viable_zones)))
    blocks_used = draw(st.integers(zones, len(viable_blocks)))
    need = draw(st.integers(1, int(caps[racks].sum())))
    return tree, (viable_zones, viable_blocks), (zones, blocks_used), racks, caps, need


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")) * 4,
          deadline=None, suppress_health_check=list(HealthCheck))
@given(instances())
def test_bound_and_incumbent_bracket_the_exhaustive_optimum(instance):
    if instance is None:
        return
    tree, viable, counts, racks, caps, need = instance
    optimum = exhaustive(tree, viable, counts, racks, caps, need)
    found = fewest_racks(tree, BLOCK, viable, counts, racks, caps, need)
    if found is None:
        assert optimum is None
        return
    assert optimum is not None
    assert found.bound <= optimum <= found.racks
    # The incumbent is a real placement: loads on candidate racks, within their room,
    # as many racks as it claims, in blocks the counts allow, the whole gang.
    assert sum(found.loads.values()) == need and len(found.loads) == found.racks
    assert all(1 <= load <= caps[rack] and rack in racks for rack, load in found.loads.items())
    blocks = {int(tree.parent_of[RACK][r]) for r in found.loads}
    assert len(blocks) == counts[BLOCK]
    assert len({ancestor(tree, BLOCK, b, ZONE) for b in blocks}) == counts[ZONE]


def test_proves_where_the_counts_force_a_poorer_block():
    # Two blocks must be used in one zone; the zone with the two large blocks is
    # excluded by the zone count only if it cannot hold the gang: here it can.
    shape = {("z0", "b0", "r0"): [8], ("z0", "b0", "r1"): [8], ("z0", "b1", "r0"): [8],
             ("z1", "b0", "r0"): [8], ("z1", "b1", "r0"): [8], ("z1", "b1", "r1"): [8]}
    tree = cluster(shape).tree
    caps = np.asarray([5, 5, 1, 4, 4, 4], dtype=np.int64)
    racks = np.arange(6)
    viable = (np.asarray([0, 1]), np.asarray([0, 1, 2, 3]))
    found = fewest_racks(tree, BLOCK, viable, (1, 2), racks, caps, 11)
    assert found is not None and found.proven
    # z0: 5+5+1 = 11 in three racks; z1: 4+4+4 = 12 in three racks.
    assert found.racks == 3 == exhaustive(tree, viable, (1, 2), racks, caps, 11)


def _fleet_snapshot():
    from topology.presets import resolve_preset
    from topology.records import node_from_json, pod_from_json
    from topology.snapshot import build_tree, snapshot_of, usage_from_pods
    from topology.synthetic import ClusterSpec, synth_load, synth_nodes

    spec = ClusterSpec(nodes=3000, occupancy=0.3, seed=4)
    nodes = synth_nodes(spec)
    pods = [pod_from_json(p) for p in synth_load(spec, nodes)]
    tree = build_tree([node_from_json(n) for n in nodes], resolve_preset("aws"))
    return snapshot_of(tree, usage_from_pods(pods))


def _gang(size):
    from solver.request import GangRequest, Member, PodShape

    shape = PodShape({"nvidia.com/gpu": 8, "pods": 1})
    return GangRequest("ns/big", (shape,), tuple(Member(f"w-{i}", i, 0) for i in range(size)),
                       size)


def test_a_near_full_gang_is_proven_by_thresholds_and_survives_a_lost_best_fit(monkeypatch):
    """Most of a fleet in one gang: the rack count comes from the threshold bound; when
    the best-fit tie-break finds nothing in its slice, the thresholds' own placement is
    used, with the same proven counts."""
    import solver.cpsat.folded as folded
    from solver.request import SolverConfig
    from solver.solve import solve

    snap = _fleet_snapshot()
    free = int((snap.resource_column("nvidia.com/gpu") >= 8).sum())
    config = SolverConfig(seed=0, workers=1, time_limit_s=20)
    first = solve(_gang(free * 9 // 10), snap, config)
    assert first.status == "placed" and first.solver.status == "OPTIMAL"
    stages = {name: status for name, _, status in first.solver.stages}
    assert stages["topology.k8s.aws/network-node-layer-3"] == "OPTIMAL (thresholds)"

    real = folded._solve_stage

    def no_best_fit(run, frontier, level, rack_stage, objective, fixed, loads, slice_s=None):
        if slice_s is not None:
            return "UNKNOWN", frontier
        return real(run, frontier, level, rack_stage, objective, fixed, loads, slice_s)

    monkeypatch.setattr(folded, "_solve_stage", no_best_fit)
    second = solve(_gang(free * 9 // 10), snap, config)
    assert second.status == "placed" and second.solver.status == "OPTIMAL"
    assert second.metrics.domains_used == first.metrics.domains_used
    assert len({a.node for a in second.assignments}) == free * 9 // 10
