"""Inter-pod rules, host ports and spread: per-node filters against placed pods, and the
gang's own pods as caps of the aggregated model (solver.interpod, solver.gangrules)."""

from __future__ import annotations

import itertools
import os
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver.reasons import ExclusionCode, FitCode
from solver.request import GangRequest, Member, PodShape, SolverConfig
from solver.solve import solve
from tests.unit.helpers import GPU, LEVELS, cluster, node, snapshot
from topology.podrules import NO_RULES, HostPort, InterPod, PodAffinityTerm, SpreadConstraint
from topology.presets import HOSTNAME, resolve_preset
from topology.records import PodRecord
from topology.selectors import LabelSelector, Requirement
from topology.snapshot import TopologySnapshot, build_snapshot, charged

CFG = SolverConfig(seed=0, workers=1, time_limit_s=10)
APP = {"app": "train"}


def selector(**labels: str) -> LabelSelector:
    return LabelSelector(tuple(Requirement(k, "In", (v,)) for k, v in labels.items()))


def term(key: str, **labels: str) -> PodAffinityTerm:
    return PodAffinityTerm(selector(**labels), key)


def gang(size: int, gpus: int = 8, *, rules: InterPod = NO_RULES, labels=None,
         namespace: str = "ml", required: str | None = None) -> GangRequest:
    shape = PodShape({GPU: gpus, "pods": 1}, namespace=namespace,
                     labels=dict(APP if labels is None else labels), rules=rules)
    return GangRequest("ml/StatefulSet/train", (shape,),
                       tuple(Member(f"train-{i}", i, 0) for i in range(size)), size, required)


def on(snap: TopologySnapshot, node_name: str, labels: dict[str, str], *, namespace="ml",
       rules: InterPod = NO_RULES, gpus: int = 0) -> TopologySnapshot:
    """The snapshot with one more pod placed on a node."""
    pod = PodRecord(namespace, f"p-{len(snap.placed)}", node_name=node_name, labels=labels,
                    requests={GPU: gpus, "pods": 1} if gpus else {"pods": 1},
                    inter_pod=rules, phase="Running")
    return charged(snap, snap.tree.index[node_name], pod)


def per_node(result) -> Counter[str]:
    return Counter(a.node for a in result.assignments)


def reasons(result) -> dict[str, int]:
    return {str(r): n for r, n in result.diagnosis.excluded.items()}


def test_anti_affinity_to_itself_on_hostname_and_a_host_port_put_one_pod_per_node():
    snap = cluster({("z1", "b1", "r1"): [8] * 4, ("z1", "b1", "r2"): [8] * 4})
    packed = solve(gang(8, gpus=4), snap, CFG)
    assert max(per_node(packed).values()) == 2 and len(per_node(packed)) == 4
    spread = solve(gang(8, gpus=4, rules=InterPod(anti_affinity=(term(HOSTNAME, **APP),))),
                   snap, CFG)
    assert spread.status == "placed" and spread.solver.status == "OPTIMAL"
    assert max(per_node(spread).values()) == 1 and len(per_node(spread)) == 8
    ports = solve(gang(8, gpus=4, rules=InterPod(host_ports=(HostPort(29500),))), snap, CFG)
    assert max(per_node(ports).values()) == 1
    assert solve(gang(9, gpus=4, rules=InterPod(host_ports=(HostPort(29500),))), snap,
                 CFG).status == "unschedulable"


def test_anti_affinity_on_a_level_puts_one_pod_per_domain_and_is_counted_exactly():
    snap = cluster({("z1", "b1", f"r{i}"): [8] * 4 for i in range(3)}
                   | {("z2", "b1", "r1"): [8] * 4})
    result = solve(gang(3, rules=InterPod(anti_affinity=(term("rack", **APP),))), snap, CFG)
    assert result.status == "placed" and result.solver.status == "OPTIMAL"
    racks = [a.domain for a in result.assignments]
    assert len(set(racks)) == 3 and result.metrics.domains_used["zone"] == 1
    four = solve(gang(4, rules=InterPod(anti_affinity=(term("rack", **APP),))), snap, CFG)
    assert four.status == "placed" and four.metrics.domains_used["zone"] == 2
    five = solve(gang(5, rules=InterPod(anti_affinity=(term("rack", **APP),))), snap, CFG)
    assert five.status == "unschedulable" and five.diagnosis.code is FitCode.UNRESOLVABLE


def test_placed_pods_repel_attract_and_hold_ports():
    base = cluster({("z1", "b1", "r1"): [8] * 2, ("z2", "b1", "r1"): [8] * 2})
    snap = on(base, "z1-b1-r1-n0", {"app": "db"})
    # Anti-affinity to app=db on hostname: that node only; on zone: the whole zone.
    away = solve(gang(3, gpus=4, rules=InterPod(anti_affinity=(term(HOSTNAME, app="db"),))),
                 snap, CFG)
    assert "z1-b1-r1-n0" not in per_node(away)
    assert reasons(away if away.status == "unschedulable" else solve(
        gang(7, gpus=4, rules=InterPod(anti_affinity=(term(HOSTNAME, app="db"),))), snap,
        CFG)) == {"node(s) didn't match pod anti-affinity rules": 1}
    zone_away = solve(gang(2, rules=InterPod(anti_affinity=(term("zone", app="db"),))), snap,
                      CFG)
    assert {a.domain.split("/")[0] for a in zone_away.assignments} == {"z2"}
    # Affinity to app=db on zone: only z1.
    near = solve(gang(2, rules=InterPod(affinity=(term("zone", app="db"),))), snap, CFG)
    assert {a.domain.split("/")[0] for a in near.assignments} == {"z1"}
    none = solve(gang(1, rules=InterPod(affinity=(term("zone", app="cache"),))), snap, CFG)
    assert none.status == "unschedulable"
    assert reasons(none) == {"node(s) didn't match pod affinity rules": 4}
    # The other namespace's db does not count: the term looks at its own namespace.
    other = solve(gang(2, namespace="other",
                       rules=InterPod(anti_affinity=(term("zone", app="db"),))), snap, CFG)
    assert other.status == "placed" and "z1" in {a.domain[:2] for a in other.assignments}
    # Host ports held by a placed pod.
    held = on(base, "z2-b1-r1-n1", {}, rules=InterPod(host_ports=(HostPort(8080),)))
    ports = solve(gang(4, gpus=8, rules=InterPod(host_ports=(HostPort(8080, ip="10.0.0.1"),))),
                  held, CFG)
    assert ports.status == "unschedulable"
    assert reasons(ports)["node(s) didn't have free ports for the requested pod ports"] == 1
    other_port = solve(gang(4, rules=InterPod(host_ports=(HostPort(8081),))), held, CFG)
    assert other_port.status == "placed"


def test_placed_pods_anti_affinity_repels_incoming_pods_symmetrically():
    base = cluster({("z1", "b1", "r1"): [8] * 3})
    snap = on(base, "z1-b1-r1-n0", {"app": "lonely"},
              rules=InterPod(anti_affinity=(term(HOSTNAME, **APP),)))
    result = solve(gang(3), snap, CFG)
    assert result.status == "unschedulable"
    assert reasons(result) == {"node(s) didn't satisfy existing pods anti-affinity rules": 1}
    assert solve(gang(2), snap, CFG).status == "placed"
    assert solve(gang(3, labels={"app": "other"}), snap, CFG).status == "placed"


def test_affinity_to_itself_with_nobody_to_join_keeps_the_gang_in_one_domain():
    snap = cluster({("z1", "b1", "r1"): [8] * 3, ("z1", "b1", "r2"): [8] * 3,
                    ("z1", "b2", "r1"): [8] * 5})
    loose = solve(gang(4), snap, CFG)
    assert loose.status == "placed"
    together = solve(gang(4, rules=InterPod(affinity=(term("rack", **APP),))), snap, CFG)
    assert {a.domain for a in together.assignments} == {"z1/b2/r1"}
    too_big = solve(gang(6, rules=InterPod(affinity=(term("rack", **APP),))), snap, CFG)
    assert too_big.status == "unschedulable"
    one_node = solve(gang(4, gpus=2, rules=InterPod(affinity=(term(HOSTNAME, **APP),))), snap,
                     CFG)
    assert len(per_node(one_node)) == 1 and sum(per_node(one_node).values()) == 4


def test_affinity_on_a_label_that_is_no_level_picks_one_group():
    nodes = [node(f"n{i}", ("z1", "b1", f"r{i % 2}"), extra={"pool": "a" if i < 3 else "b"})
             for i in range(6)]
    snap = snapshot(nodes)
    result = solve(gang(3, rules=InterPod(affinity=(term("pool", **APP),))), snap, CFG)
    assert result.status == "placed"
    pools = {snap.tree.nodes[snap.tree.index[a.node]].labels["pool"] for a in result.assignments}
    assert len(pools) == 1


def test_a_rule_phalanx_cannot_keep_among_the_gang_is_refused_by_name():
    nodes = [node(f"n{i}", ("z1", "b1", f"r{i % 2}"), extra={"pool": "a" if i < 3 else "b"})
             for i in range(6)]
    result = solve(gang(2, rules=InterPod(anti_affinity=(term("pool", **APP),))),
                   snapshot(nodes), CFG)
    assert result.status == "unschedulable"
    assert result.diagnosis.code is FitCode.UNRESOLVABLE
    assert "topologyKey pool" in result.reason
    assert result.diagnosis.refusals[0].code is ExclusionCode.UNSUPPORTED_GANG_RULE


def test_zone_spread_caps_first_then_raises_the_minimum():
    spread = InterPod(spread=(SpreadConstraint(1, "zone", True, selector(**APP)),))
    snap = cluster({("z1", "b1", "r1"): [8] * 6, ("z2", "b1", "r1"): [8] * 6})
    even = solve(gang(6, rules=spread), snap, CFG)
    assert even.status == "placed"
    zones = Counter(a.domain.split("/")[0] for a in even.assignments)
    assert zones == {"z1": 3, "z2": 3}
    odd = solve(gang(5, rules=spread), snap, CFG)
    assert sorted(Counter(a.domain.split("/")[0] for a in odd.assignments).values()) == [2, 3]
    # Two matching pods already in z1: a gang of 2 goes to z2 (2 + 0 vs 0 + 2 is even).
    skewed = on(on(snap, "z1-b1-r1-n0", APP), "z1-b1-r1-n1", APP)
    two = solve(gang(2, rules=spread), skewed, CFG)
    assert {a.domain.split("/")[0] for a in two.assignments} == {"z2"}
    # Unconstrained, the same gang packs into one zone.
    assert solve(gang(6), snap, CFG).metrics.domains_used["zone"] == 1


def test_spread_excludes_nodes_without_the_key_and_over_skewed_domains_per_pod():
    nodes = [node("a", ("z1", "b1", "r1")), node("b", ("z2", "b1", "r1")),
             node("c", ("z2", "b1", "r1"))]
    nodes[2].labels.pop("zone")
    plain = build_snapshot(nodes, {}, resolve_preset(["block", "rack"]))
    spread = InterPod(spread=(SpreadConstraint(1, "zone", True, selector(app="web")),))
    skewed = on(on(plain, "a", {"app": "web"}), "a", {"app": "web"})
    # `a` is over-skewed (2 - 0 > 1) even for a pod that does not count itself; `c` has
    # no zone at all.
    single = solve(gang(1, labels={"app": "other"}, rules=spread), skewed, CFG)
    assert single.status == "placed" and single.assignments[0].node == "b"
    more = solve(gang(3, labels={"app": "other"}, rules=spread), skewed, CFG)
    assert more.status == "unschedulable"
    assert reasons(more) == {
        "node(s) didn't match pod topology spread constraints": 1,
        "node(s) didn't match pod topology spread constraints (missing required label)": 1,
    }


def test_preferred_terms_are_noted_not_scored():
    rules = InterPod(preferred=True,
                     spread=(SpreadConstraint(1, "zone", False, selector(**APP)),))
    result = solve(gang(2, rules=rules), cluster({("z1", "b1", "r1"): [8] * 2}), CFG)
    assert result.status == "placed"
    assert any("preferred pod (anti-)affinity" in note for note in result.notes)
    assert any("ScheduleAnyway" in note for note in result.notes)


# -- property: with caps, CP-SAT's counts equal an exhaustive optimum -----------------

def brute_force_capped(racks: dict[tuple[str, ...], list[int]], need: int, node_cap: int,
                       rack_cap: int | None, block_cap: int | None):
    """Lexicographic minimum of (zones, blocks, racks) over rack sets, each rack holding
    min(rack cap, its nodes' slots each clipped to the node cap), each block at most its
    cap."""
    slots = {r: sum(min(node_cap, f // 8) for f in free) for r, free in racks.items()}
    if rack_cap is not None:
        slots = {r: min(rack_cap, s) for r, s in slots.items()}
    best = None
    names = [r for r in racks if slots[r] > 0]
    for k in range(1, min(len(names), need) + 1):
        for chosen in itertools.combinations(names, k):
            blocks: Counter[tuple[str, ...]] = Counter()
            for r in chosen:
                blocks[r[:2]] += slots[r]
            room = sum(min(block_cap, v) if block_cap is not None else v
                       for v in blocks.values())
            if room < need:
                continue
            key = (len({r[:1] for r in chosen}), len(blocks), k)
            best = key if best is None or key < best else best
    return best


capped_racks = st.dictionaries(
    keys=st.tuples(st.sampled_from(["z1", "z2"]), st.sampled_from(["b1", "b2", "b3"]),
                   st.sampled_from(["r1", "r2", "r3"])),
    values=st.lists(st.sampled_from([0, 8, 8]), min_size=1, max_size=6),
    min_size=1, max_size=9)


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(racks=capped_racks, need=st.integers(1, 14),
       cap=st.sampled_from(["rack", "block", "both"]))
def test_capped_counts_match_exhaustive_optimum(racks, need, cap):
    """Anti-affinity to itself on rack and/or block: at most one pod per such domain."""
    terms = {"rack": (term("rack", **APP),), "block": (term("block", **APP),),
             "both": (term("rack", **APP), term("block", **APP))}[cap]
    snap = cluster(racks)
    expected = brute_force_capped(racks, need, 1, 1 if cap in ("rack", "both") else None,
                                  1 if cap in ("block", "both") else None)
    result = solve(gang(need, rules=InterPod(anti_affinity=terms)), snap, CFG)
    if expected is None:
        assert result.status == "unschedulable"
        return
    assert result.status == "placed" and result.solver.status == "OPTIMAL", result.to_json()
    used = result.metrics.domains_used
    assert (used["zone"], used["block"], used["rack"]) == expected
    assert len(result.assignments) == need
    domains = [a.domain for a in result.assignments]
    if cap in ("rack", "both"):
        assert len(set(domains)) == need
    if cap in ("block", "both"):
        assert len({d.rsplit("/", 1)[0] for d in domains}) == need
    assert LEVELS == ("zone", "block", "rack")


@settings(max_examples=int(os.environ.get("PHALANX_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(slots=st.lists(st.integers(0, 6), min_size=2, max_size=3),
       existing=st.lists(st.integers(0, 3), min_size=3, max_size=3),
       skew=st.integers(1, 2), need=st.integers(1, 10))
def test_zone_spread_places_exactly_when_some_distribution_keeps_the_skew(
        slots, existing, skew, need):
    """Against every distribution of the gang over the zones: placed iff one keeps
    existing + placed <= minimum + maxSkew everywhere (the state kube-scheduler's
    per-pod checks can reach), and the placement found keeps it."""
    zones = [f"z{i}" for i in range(len(slots))]
    snap = cluster({(z, "b1", "r1"): [8] * max(n, 1) for z, n in zip(zones, slots, strict=True)})
    for zone, n in zip(zones, slots, strict=True):  # nodes beyond the slots are full
        for i in range(n, max(n, 1)):
            snap = on(snap, f"{zone}-b1-r1-n{i}", {}, gpus=8)
    for zone, count in zip(zones, existing, strict=False):
        for _ in range(count):
            snap = on(snap, f"{zone}-b1-r1-n0", APP)
    e = dict(zip(zones, existing, strict=False))

    def keeps(counts: dict[str, int]) -> bool:
        final = {z: e[z] + counts.get(z, 0) for z in zones}
        return all(final[z] <= min(final.values()) + skew for z in zones if counts.get(z))

    feasible = any(keeps(dict(zip(zones, c, strict=True)))
                   for c in itertools.product(*(range(n + 1) for n in slots))
                   if sum(c) == need)
    spread = InterPod(spread=(SpreadConstraint(skew, "zone", True, selector(**APP)),))
    result = solve(gang(need, rules=spread), snap, CFG)
    assert (result.status == "placed") == feasible, (slots, existing, skew, need)
    if feasible:
        assert keeps(Counter(a.domain.split("/")[0] for a in result.assignments))


def test_refusals_and_rule_exclusions_come_with_remedies():
    from solver.explain import remedies
    from solver.reasons import Exclusion

    snap = cluster({("z1", "b1", "r1"): [8] * 2})
    dra = PodShape({GPU: 8, "pods": 1}, refusals=(Exclusion(ExclusionCode.RESOURCE_CLAIMS,
                                                            "gpu"),))
    refused = solve(GangRequest("ml/x", (dra,), (Member("a", 0, 0),), 1), snap, CFG)
    assert refused.status == "unschedulable" and refused.diagnosis.code is FitCode.UNRESOLVABLE
    assert "DRA resource claims (gpu)" in refused.reason
    assert any("kube-scheduler" in r for r in remedies(refused.diagnosis))
    busy = on(snap, "z1-b1-r1-n0", {"app": "db"})
    away = solve(gang(2, rules=InterPod(anti_affinity=(term(HOSTNAME, app="db"),))), busy, CFG)
    assert any("podAntiAffinity" in r for r in remedies(away.diagnosis))
