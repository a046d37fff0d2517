"""pods/binding semantics on the real apiserver: success, already bound, pod gone, not
leading, and connections the server closed under the binder."""

from __future__ import annotations

import pytest

from kube import KubeClient, api_path
from localcluster.bulk import create_all, ensure_namespace, wait_until
from scheduler.binder import Binder
from scheduler.collaborators import NOT_LEADER

pytestmark = pytest.mark.integration
NS = "bind-test"


def pending_pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "x"}]}}


def test_bind_outcomes(kube):
    ensure_namespace(kube, NS)
    create_all(kube, [pending_pod(f"p{i}") for i in range(3)])
    binder = Binder(kube, concurrency=4)
    try:
        results, seconds = binder.bind_all([(f"{NS}/p0", "node-a"), (f"{NS}/p1", "node-a")])
        assert all(r.ok and r.status == 201 for r in results) and seconds > 0
        assert kube.get(api_path("", "v1", "pods", NS, "p0"))["spec"]["nodeName"] == "node-a"
        # Bound already: fine when it is where we wanted, a failure anywhere else.
        again = binder.bind_one(f"{NS}/p0", "node-a")
        assert again.ok and again.status == 409
        elsewhere = binder.bind_one(f"{NS}/p1", "node-b")
        assert not elsewhere.ok and "already bound to node-a" in elsewhere.reason
        # The pod went away between solve and bind.
        kube.delete(api_path("", "v1", "pods", NS, "p2"), gracePeriodSeconds=0)
        wait_until(lambda: not kube.get(api_path("", "v1", "pods", NS),
                                        fieldSelector="metadata.name=p2")["items"], 30,
                   "p2 deleted")
        gone = binder.bind_one(f"{NS}/p2", "node-a")
        assert not gone.ok and gone.status == 404
    finally:
        binder.close()


def test_not_leading_sends_nothing(kube):
    ensure_namespace(kube, NS)
    create_all(kube, [pending_pod("nl0")])
    binder = Binder(kube, concurrency=2, allowed=lambda: False)
    try:
        (result,), _ = binder.bind_all([(f"{NS}/nl0", "node-a")])
        assert not result.ok and result.unsent and result.status == NOT_LEADER
        assert not kube.get(api_path("", "v1", "pods", NS, "nl0"))["spec"].get("nodeName")
    finally:
        binder.close()


def test_connections_closed_by_a_restarted_apiserver_are_replaced(local_cluster):
    """Idle bind connections die with the apiserver (or its 90 s idle timeout): the next
    burst replaces each at once, without a failed bind or a backoff."""
    kube = KubeClient.from_kubeconfig(str(local_cluster.kubeconfig))
    ensure_namespace(kube, NS)
    create_all(kube, [pending_pod(f"r{i}") for i in range(8)])
    binder = Binder(kube, concurrency=4)
    try:
        first, _ = binder.bind_all([(f"{NS}/r{i}", "node-a") for i in range(4)])
        assert all(r.ok and r.status == 201 for r in first)
        opened = binder.burst.opened
        local_cluster.restart_component("kube-apiserver")
        lost = kube.transient[0]
        again, _ = binder.bind_all([(f"{NS}/r{i}", "node-b") for i in range(4, 8)])
        assert all(r.ok and r.status == 201 for r in again), again
        assert kube.transient[0] == lost  # no bind saw a lost connection
        assert binder.burst.opened > opened
        assert {kube.get(api_path("", "v1", "pods", NS, f"r{i}"))["spec"]["nodeName"]
                for i in range(4, 8)} == {"node-b"}
    finally:
        binder.close()
        kube.close()
