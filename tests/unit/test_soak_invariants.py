"""The soak's invariants on hand-made snapshots: each check catches what it names and
passes what is allowed (benchmarks/soak/invariants.py)."""

from __future__ import annotations

import socket
import threading

from benchmarks.soak import invariants
from benchmarks.soak.invariants import (
    BindLedger,
    FaultClock,
    GangState,
    Members,
    Need,
    NodeView,
    PodView,
    advance,
    fits,
    inversions,
    overcommitted,
    rss_growth,
    usage,
)
from benchmarks.soak.proxy import PausableProxy

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
    found = inversions([(low, {"l1", "l2"})], [(high, need)], NODES, took, clock=20.0)
    assert len(found) == 1 and "took the room" in found[0]
    # Elsewhere: the higher gang still fits (r2 untouched... n3, n4 are two racks).
    elsewhere = [pod("l1", "n3", gang="low"), pod("l2", "n4", gang="low")]
    assert inversions([(low, {"l1", "l2"})], [(high, need)], NODES, elsewhere, 20.0) == []
    fresh = GangState("high", size=2, priority=100, created=0.0, fitting_since=15.0)
    assert inversions([(low, {"l1", "l2"})], [(fresh, need)], NODES, took, 20.0) == []


def test_rss_growth_is_measured_after_warm_up_over_a_long_enough_span():
    samples = [(0.0, 100), (50.0, 200), (100.0, 200), (400.0, 210)]
    assert rss_growth(samples, warm_from=60.0, min_span_s=200) == 0.05
    assert rss_growth(samples, warm_from=60.0, min_span_s=400) is None


def test_requests_per_minute_of_waiting_skip_the_first_minute():
    writes = [(5.0, "g"), (70.0, "g"), (80.0, "g"), (130.0, "g"), (200.0, "h")]
    worst = invariants.requests_per_gang_minute(writes, {"g": [(0.0, 185.0)],
                                                         "h": [(0.0, 100.0)]})
    assert worst == {"g": 2.0, "h": 0.0}


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
