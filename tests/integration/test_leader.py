"""Leader election between two real `phalanx run` processes on a coordination/v1 Lease."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from kube import api_path
from tests.integration.helpers import (
    NS,
    ensure_namespace,
    pods_of,
    pool_nodes,
    scrape,
    start_phalanx,
    statefulset,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration
SCHEDULER = "phalanx-le"
LEASE_NS = "phalanx-le"
BOUND = 'phalanx_pods_bound_total{path="gang"}'
CONFIG = f"""
schedulerName: {SCHEDULER}
leaderElection: {{enabled: true, namespace: {LEASE_NS}, leaseName: le-test}}
"""


def _leader(process) -> bool:
    try:
        return httpx.get(f"{process.url}/readyz", timeout=5).json()["leader"]
    except (httpx.HTTPError, ValueError):
        return False


def _gang(kube, name: str, replicas: int) -> None:
    sts = statefulset(name, replicas, "pool-le")
    sts["spec"]["template"]["spec"]["schedulerName"] = SCHEDULER
    kube.create(api_path("apps", "v1", "statefulsets", NS), sts)


def _all_bound(kube, name: str, replicas: int) -> bool:
    pods = pods_of(kube, name)
    return len(pods) == replicas and all(p["spec"].get("nodeName") for p in pods)


@pytest.fixture(scope="module")
def pool(kube, phalanx):
    ensure_namespace(kube, LEASE_NS)
    pool_nodes(kube, "pool-le", 24, seed=51, fanout=(1, 2, 12))


@pytest.fixture
def pair(kube, local_cluster, pool, tmp_path):
    processes = [start_phalanx(local_cluster.kubeconfig, tmp_path / f"p{i}.log", CONFIG)
                 for i in range(2)]
    try:
        wait_until(lambda: sum(_leader(p) for p in processes) == 1, 30, "one leader")
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a frozen process cannot terminate
            stop_process(process)
        for process in processes:
            print(process.log_path.read_text()[-3000:])


def test_only_the_leader_binds_and_a_killed_leader_is_replaced(kube, pair):
    leader, standby = sorted(pair, key=lambda p: not _leader(p))
    lease = kube.get(api_path("coordination.k8s.io", "v1", "leases", LEASE_NS, "le-test"))
    assert lease["spec"]["holderIdentity"] and lease["spec"]["leaseDurationSeconds"] == 10
    _gang(kube, "le-one", 6)
    wait_until(lambda: _all_bound(kube, "le-one", 6), 60, "le-one bound")
    assert scrape(leader.url, BOUND) == 6 and scrape(standby.url, BOUND) == 0
    assert httpx.get(f"{standby.url}/readyz", timeout=5).status_code == 503

    leader.kill()  # SIGKILL: no release, the standby must wait the lease out
    killed = time.monotonic()
    wait_until(lambda: _leader(standby), 30, "standby takes over")
    takeover_s = time.monotonic() - killed
    print(f"takeover after kill -9: {takeover_s:.1f}s")
    assert takeover_s <= 15
    _gang(kube, "le-two", 6)
    wait_until(lambda: _all_bound(kube, "le-two", 6), 60, "le-two bound by the new leader")
    assert scrape(standby.url, BOUND) == 6


def test_a_leader_cut_off_from_its_lease_stops_binding_before_another_starts(kube, pair):
    leader, standby = sorted(pair, key=lambda p: not _leader(p))
    os.kill(leader.pid, signal.SIGSTOP)  # frozen: it cannot renew, as in a partition
    wait_until(lambda: _leader(standby), 30, "standby takes over from the frozen leader")
    os.kill(leader.pid, signal.SIGCONT)
    # Thawed, the old leader's renew deadline has long passed: it must not bind, even
    # before it has talked to the API server again.
    _gang(kube, "le-three", 6)
    wait_until(lambda: _all_bound(kube, "le-three", 6), 60, "le-three bound")
    assert scrape(leader.url, BOUND) == 0
    assert scrape(standby.url, BOUND) == 6
    assert not _leader(leader)
