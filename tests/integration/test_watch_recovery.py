"""The API server restarted under a running scheduler, with its watch expired (410).

A cluster of its own: its apiserver serves pods from etcd (`--watch-cache-sizes=pods#0`)
and compacts every 5 s, so a pod watch resumed from a quiet scheduler's last
resourceVersion after the restart meets a real `410 Gone`, as on a busy production
cluster; the shared test cluster is not disturbed.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from kube import api_path
from localcluster.bulk import ensure_namespace
from localcluster.cluster import LocalCluster
from tests.integration.helpers import (
    NS,
    pods_of,
    pool_nodes,
    readyz,
    scrape,
    start_phalanx,
    statefulset,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    own = LocalCluster.for_this_process("watch", extra_args={"kube-apiserver": {
        "watch-cache-sizes": "pods#0", "etcd-compaction-interval": "5s"}})
    try:
        own.up()
        yield own
    finally:
        own.down()


def test_apiserver_restart_and_410_relist_keeps_pending_gangs(cluster, tmp_path):
    kube = cluster.kube()
    ensure_namespace(kube, NS)
    pool_nodes(kube, "pool-w", 12, seed=91, fanout=(1, 1, 12))
    process = start_phalanx(cluster.kubeconfig, tmp_path / "phalanx.log")
    try:
        wait_until(lambda: readyz(process) == 200, 60, "phalanx ready")
        kube.create(api_path("apps", "v1", "statefulsets", NS), statefulset("wr", 16, "pool-w"))
        wait_until(lambda: httpx.get(f"{process.url}/v1/groups/{NS}/wr", timeout=5)
                   .json().get("state") == "Pending: unschedulable", 60, "wr pending")
        # Pods quiet, etcd busy: compaction moves past the scheduler's pod watch version.
        for i in range(30):
            kube.create(api_path("", "v1", "configmaps", NS),
                        {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": f"churn-{i}"}})
            time.sleep(0.5)
        lists_before = scrape(process.url, 'phalanx_watch_lists_total{resource="pods"}')
        statuses: list[int] = []
        restart = threading.Thread(target=cluster.restart_component,
                                   args=("kube-apiserver", 3.0))
        restart.start()
        while restart.is_alive():
            statuses.append(readyz(process))
            time.sleep(0.2)
        restart.join()
        assert 503 in statuses, statuses  # stale caches reported while the server was away
        wait_until(lambda: readyz(process) == 200, 60, "ready again after the restart")
        log = process.log_path.read_text()
        assert "expired, re-listing" in log, log[-3000:]
        assert scrape(process.url, 'phalanx_watch_lists_total{resource="pods"}') > lists_before
        # The gang pending before the restart is still known and is placed once room exists.
        assert httpx.get(f"{process.url}/v1/groups/{NS}/wr", timeout=5).status_code == 200
        pool_nodes(kube, "pool-w", 6, seed=92, fanout=(1, 1, 6), batch="b")
        wait_until(lambda: len([p for p in pods_of(kube, "wr") if p["spec"].get("nodeName")])
                   == 16, 60, "wr placed after the restart")
    finally:
        stop_process(process)
        print(process.log_path.read_text()[-4000:])
