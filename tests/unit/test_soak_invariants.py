"""The soak's invariants on hand-made snapshots: each check catches what it names and
passes what is allowed (benchmarks/soak/invariants.py)."""

from __future__ import annotations

import argparse
import random
import socket
import threading
import time

import pytest
from kubernetes import client

from benchmarks.soak import invariants
from benchmarks.soak.invariants import (
    BindLedger,
    FaultClock,
    GangState,
    Members,
    Need,
    NodeView,
    PodView,
    Room,
    advance,
    fits,
    inversions,
    overcommitted,
    rss_growth,
    usage,
)
from benchmarks.soak.judge import Judge
from benchmarks.soak.observer import BEACON, BEACON_KEY, View
from benchmarks.soak.proxy import PausableProxy
from benchmarks.soak.state import Run, Tracked
from benchmarks.soak.workload import GANG_LABEL, NS, Stream
from kube import KubeClient

L1, L2, L3 = invariants.LEVELS
GPU = "nvidia.com/gpu"
WHOLE = {GPU: 8, "cpu": 16000, "pods": 1}


def node(name: str, rack: str, spine: str = "s1", ok: bool = True) -> NodeView:
    return NodeView(name, {GPU: 8, "cpu": 192000, "memory": 1 << 40, "pods": 110}, ok,
                    {L1: "a", L2: spine, L3: rack})


def pod(uid: str, node_name: str = "", gang: str = "g", gpus: int = 8, active: bool = True,
        terminating: bool = False) -> PodView:
    return PodView(uid, f"soak/{uid}", node_name, active, terminating,
                   {GPU: gpus, "cpu": 16000, "pods": 1}, gang)


NODES = {n.name: n for n in (node("n1", "r1"), node("n2", "r1"), node("n3", "r2"),
                             node("n4", "r2", spine="s2"))}


def test_over_commit_counts_unfinished_pods_and_skips_gone_nodes():
    pods = [pod("a", "n1"), pod("b", "n1", gpus=4), pod("c", "n2"), pod("d", "n2",
                                                                      active=False),
            pod("e", "gone"), pod("f", "gone")]
    assert overcommitted(NODES, usage(pods)) == ["n1 nvidia.com/gpu 12/8"]
    assert overcommitted(NODES, usage([pod("t", "n3"), pod("u", "n3", terminating=True)])) \
        == ["n3 nvidia.com/gpu 16/8"]  # a terminating pod still holds its room
    reborn = {"n1": NodeView("n1", {}, False, {})}  # created again, no status yet
    assert overcommitted(reborn, usage([pod("a", "n1")])) == []


def test_a_pod_seen_on_another_node_is_a_rebind():
    ledger = BindLedger()
    assert ledger.update([pod("a"), pod("a", "n1")]) == []
    assert ledger.update([pod("a", "n1")]) == []
    assert ledger.update([pod("a", "n2")]) == ["pod soak/a uid a rebound n1 -> n2"]


def test_fit_needs_one_domain_of_the_required_level_and_whole_slices():
    used = usage([pod("x", "n3")])
    assert fits(Need(WHOLE, 3), NODES, used)
    assert not fits(Need(WHOLE, 4), NODES, used)
    assert fits(Need(WHOLE, 2, required=L3), NODES, used)  # r1: n1, n2
    assert not fits(Need(WHOLE, 3, required=L2), NODES, used)  # s1 has n1, n2 free
    assert not fits(Need(WHOLE, 3, required=L3), NODES, {})  # r2 has 2 nodes at most
    # Slices of 2 in one rack: r1 holds one, r2 (n3 busy, n4 in s2) none whole.
    assert fits(Need(WHOLE, 2, slice_level=L3, slice_size=2), NODES, used)
    assert not fits(Need(WHOLE, 4, slice_level=L3, slice_size=2), NODES, used)
    cordoned = {**NODES, "n1": node("n1", "r1", ok=False)}
    assert not fits(Need(WHOLE, 2, required=L3), cordoned, used)
    assert fits(Need(WHOLE, 1, within={L3: "r2"}), NODES, {})
    assert not fits(Need(WHOLE, 1, within={L3: "r2"}), NODES, usage([pod("y", "n3"),
                                                                     pod("z", "n4")]))


def test_the_fault_clock_stands_still_during_blocking_faults_and_their_grace():
    clock = FaultClock()
    assert clock.tick(0.0, False) == 0.0
    assert clock.tick(10.0, False) == 10.0
    assert clock.tick(11.0, True) == 10.0
    assert clock.tick(20.0, False) == 10.0  # within the grace after 11 s
    assert clock.tick(11.0 + invariants.GRACE_S + 1, False) == 11.0  # 1 s past the grace


def test_a_gang_that_fits_must_bind_within_t_and_partial_gangs_must_heal():
    state = GangState("g", size=4, priority=0, created=0.0)
    broken = []
    for second in range(int(invariants.T_S) + 2):
        broken += advance(state, Members(0, 4), True, float(second), float(second), 1.0)
    assert len(broken) == 1 and "fitted for" in broken[0]
    waiting = GangState("w", size=4, priority=0, created=0.0)
    assert all(not advance(waiting, Members(0, 4), False, float(s), float(s), 1.0)
               for s in range(200))  # does not fit: waiting is right
    partial = GangState("p", size=4, priority=0, created=0.0)
    broken = []
    for second in range(int(invariants.REPAIR_S) + 2):
        broken += advance(partial, Members(2, 2), False, float(second), float(second), 1.0)
    assert len(broken) == 1 and "partly bound" in broken[0]
    repaired = GangState("r", size=4, priority=0, created=0.0)
    advance(repaired, Members(4, 0), False, 1.0, 1.0, 1.0)
    assert all(not advance(repaired, Members(3, 1), False, float(s), float(s), 1.0)
               for s in range(2, 200))  # lost a member after completing: not all-or-nothing


def test_a_lower_priority_gang_taking_a_fitting_higher_ones_room_is_an_inversion():
    high = GangState("high", size=2, priority=100, created=0.0, fitting_since=0.0)
    low = GangState("low", size=2, priority=10, created=0.0)
    took = [pod("l1", "n1", gang="low"), pod("l2", "n2", gang="low")]
    need = Need(WHOLE, 2, required=L3)
    found = inversions([(low, took)], [(high, need)], Room(NODES, usage(took)), clock=20.0)
    assert len(found) == 1 and "took the room" in found[0]
    # Elsewhere: the higher gang still fits (r2 untouched... n3, n4 are two racks).
    elsewhere = [pod("l1", "n3", gang="low"), pod("l2", "n4", gang="low")]
    assert inversions([(low, elsewhere)], [(high, need)], Room(NODES, usage(elsewhere)),
                      20.0) == []
    fresh = GangState("high", size=2, priority=100, created=0.0, fitting_since=15.0)
    assert inversions([(low, took)], [(fresh, need)], Room(NODES, usage(took)), 20.0) == []


def test_rss_growth_is_measured_after_warm_up_over_a_long_enough_span():
    samples = [(0.0, 100), (50.0, 200), (100.0, 200), (400.0, 210)]
    assert rss_growth(samples, warm_from=60.0, min_span_s=200) == 0.05
    assert rss_growth(samples, warm_from=60.0, min_span_s=400) is None


def test_rss_is_judged_once_the_windows_a_leader_keeps_have_filled():
    """A process's Event series, placed gangs' records and held room fill for their
    windows (up to 600 s) after it first leads: growth then is warm-up. Growth after is
    judged, over what is left of the process's life."""
    from pathlib import Path
    from types import SimpleNamespace

    from benchmarks.soak.replicas import Incarnation
    from benchmarks.soak.report import RSS_WARMUP_BEFORE_S, RSS_WARMUP_S, _incarnation_growth

    assert RSS_WARMUP_S == 600.0

    def growth(after_warm_up: float, warmup_s: float = RSS_WARMUP_S) -> float | None:
        # Leads at 1,000 s: +20 % while its windows fill, then `after_warm_up` more.
        rss = [(t, int(100_000 * (1 + 0.2 * min(t - 1000, 600) / 600)
                       * (1 + after_warm_up * max(t - 1600, 0) / 1000)))
               for t in range(1000, 2610, 10)]
        life = Incarnation(process=None, log=Path("x.log"), url="", started=1000.0,
                           rss=rss, led_at=1000.0)
        run = Run(args=argparse.Namespace(), start=0.0, population=[(0.0, 1000)])
        grew = _incarnation_growth(run, [SimpleNamespace(index=0, history=[life])], warmup_s)
        return grew.growth if grew is not None else None

    assert growth(0.025) == pytest.approx(0.025, abs=0.002)
    assert growth(0.15) == pytest.approx(0.15, abs=0.002)  # a leak still fails
    assert growth(0.025, warmup_s=RSS_WARMUP_BEFORE_S) > 0.10  # what 300 s judged


def test_requests_per_minute_of_waiting_skip_the_first_minute():
    writes = [(5.0, "g"), (70.0, "g"), (80.0, "g"), (130.0, "g"), (200.0, "h")]
    worst = invariants.requests_per_gang_minute(writes, {"g": [(0.0, 185.0)],
                                                         "h": [(0.0, 100.0)]})
    assert worst == {"g": 2.0, "h": 0.0}


def test_a_burst_of_requests_is_counted_wherever_it_falls_in_the_span():
    # 0.2-s bind retries from 70 s to 110 s of a 110-s span: no whole minute aligned to
    # the span's start holds them, a sliding one does.
    binds = [(70.0 + 0.2 * i, "g") for i in range(200)]
    assert invariants.requests_per_gang_minute(binds, {"g": [(0.0, 110.0)]}) == {"g": 200.0}
    assert invariants.requests_per_gang_minute(binds, {"g": [(60.0, 110.0)]}) == {"g": 0.0}


def test_the_proxy_forwards_and_a_paused_proxy_holds_bytes_until_resumed():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        while data := conn.recv(1024):
            conn.sendall(data)
        conn.close()
    threading.Thread(target=echo, daemon=True).start()
    proxy = PausableProxy(port).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        client.sendall(b"one")
        assert client.recv(16) == b"one"
        proxy.pause()
        client.sendall(b"two")
        client.settimeout(0.5)
        try:
            client.recv(16)
            raise AssertionError("bytes crossed a paused proxy")
        except TimeoutError:
            pass
        proxy.resume()
        client.settimeout(2)
        assert client.recv(16) == b"two"
        client.close()
    finally:
        proxy.stop()
        server.close()


def _fits_by_hand(need: Need, nodes: dict[str, NodeView], used: dict) -> bool:
    """The rule written out node by node: the oracle Room's vector form must agree with."""
    per_top: dict[tuple[str, ...], int] = {}
    per_slice: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
    for node in nodes.values():
        if need.within and any(node.labels.get(k) != v for k, v in need.within.items()):
            continue
        if not node.schedulable:
            continue
        free = [node.allocatable.get(r, 0) - used.get(node.name, {}).get(r, 0)
                for r in invariants.RESOURCES]
        asked = [need.requests.get(r, 0) for r in invariants.RESOURCES]
        room = max(0, min(f // a for f, a in zip(free, asked, strict=True) if a > 0))
        top = invariants.domain(node, need.required) if need.required else ()
        per_top[top] = per_top.get(top, 0) + room
        if need.slice_level:
            key = (top, invariants.domain(node, need.slice_level))
            per_slice[key] = per_slice.get(key, 0) + room
    for top, room in per_top.items():
        if room < need.count:
            continue
        if not need.slice_level:
            return True
        whole = sum(r // need.slice_size for (t, _), r in per_slice.items() if t == top)
        if whole * need.slice_size >= need.count:
            return True
    return need.count <= 0


def test_room_agrees_with_the_rule_written_node_by_node():
    rng = random.Random(7)
    for _ in range(300):
        nodes = {}
        for i in range(rng.randint(0, 40)):
            nodes[f"n{i}"] = NodeView(
                f"n{i}", {GPU: 8, "cpu": 64000, "memory": 1 << 30, "pods": 110},
                rng.random() > 0.1,
                {L1: f"a{rng.randint(0, 1)}", L2: f"s{rng.randint(0, 3)}",
                 L3: f"r{rng.randint(0, 7)}"})
        pods = [pod(f"p{j}", rng.choice([*nodes, ""]) if nodes else "",
                    gpus=rng.choice([1, 2, 4, 8]), active=rng.random() > 0.1)
                for j in range(rng.randint(0, 60))]
        used = usage(pods)
        room = Room(nodes, used)
        level = rng.choice([None, L1, L2, L3])
        inner = rng.choice([None, L2, L3])
        within = None
        if nodes and rng.random() < 0.2:
            some = rng.choice(list(nodes.values()))
            within = {k: some.labels[k] for k in (L1, L2)}
        need = Need({GPU: rng.choice([1, 2, 8]), "cpu": 8000, "pods": 1},
                    rng.randint(0, 24), level, inner, rng.choice([2, 4]) if inner else 0,
                    within)
        assert room.fits(need) == _fits_by_hand(need, nodes, used), (need, len(nodes))
        freed = room.freed(pods[:5])
        assert freed.fits(need) == _fits_by_hand(need, nodes, usage(pods[5:])), need


def _api_pod(uid: str, node_name: str = "", gang: str = "g", phase: str = "Pending",
             gpus: int = 8) -> dict:
    return {"metadata": {"uid": uid, "name": uid, "namespace": "soak",
                         "labels": {GANG_LABEL: gang}},
            "spec": {"nodeName": node_name, "containers": [
                {"name": "c", "resources": {"requests": {GPU: str(gpus)}}}]},
            "status": {"phase": phase}}


def test_the_view_keeps_usage_and_gangs_as_pods_change():
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    view = View(KubeClient(configuration))
    view._replace_pods([_api_pod("a", "n1"), _api_pod("b")])
    view._pod_event("MODIFIED", _api_pod("b", "n1", gpus=8))
    view._pod_event("ADDED", _api_pod("c", "n2", gang="h", gpus=4))
    moment = view.moment()
    assert moment.used["n1"][GPU] == 16 and moment.used["n2"][GPU] == 4
    assert sorted(p.uid for p in moment.gangs["g"]) == ["a", "b"]
    assert [p.uid for p in moment.changed] == ["a", "b", "b", "c"]
    view._pod_event("MODIFIED", _api_pod("a", "n1", phase="Succeeded"))  # room given back
    view._pod_event("DELETED", _api_pod("c", "n2", gang="h", gpus=4))
    moment = view.moment()
    assert moment.used == {"n1": {GPU: 8, "pods": 1}} and "h" not in moment.gangs
    assert [p.uid for p in moment.changed] == ["a"]
    # The same as parsing everything again: what the first judge did each second.
    everything = [PodView.from_api(p, GANG_LABEL) for p in (
        _api_pod("a", "n1", phase="Succeeded"), _api_pod("b", "n1"))]
    assert moment.used == usage(everything)


def test_the_beacon_measures_how_far_behind_the_view_is():
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    view = View(KubeClient(configuration))
    assert view.lag_s() == 0.0
    written = round(time.monotonic() - 3.0, 3)  # as the writer rounds what it writes
    view.written.extend([written, written + 1.0])
    assert view.lag_s() >= 2.99
    beacon = {"metadata": {"uid": "b", "name": BEACON, "namespace": NS,
                           "annotations": {BEACON_KEY: f"{written:.3f}"}}}
    view._pod_event("MODIFIED", beacon)
    assert len(view.lags) == 1 and view.lags[0] >= 2.99
    assert 1.5 < view.lag_s() < 3.0  # the second write is still out


def test_a_pause_forgets_how_long_gangs_have_fitted_and_who_started_during_it():
    """While the judge's view lags nothing is seen: a gang that fitted before a pause has
    not fitted "without a break" across it, and gangs that bound during it are not
    judged against the priority order on the first tick after it."""
    run = Run(argparse.Namespace(minutes=1.0, seed=1, nodes=4))
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    judge = Judge(run, KubeClient(configuration))  # pause() makes no call
    gang = Stream(1, 40, 60.0).gang()
    state = GangState(gang.name, size=gang.size, priority=0, created=0.0, fit_clock=40.0,
                      fitting_since=5.0)
    run.gangs[gang.name] = Tracked(gang, state)
    judge.pause(blocking=False)
    assert state.fit_clock == 0.0 and state.fitting_since is None and judge.resumed
