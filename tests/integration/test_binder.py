"""pods/binding semantics on the real apiserver: success, already bound, pod gone."""

from __future__ import annotations

import pytest

from kube import api_path
from localcluster.bulk import create_all, ensure_namespace, wait_until
from scheduler.binder import Binder

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
