"""Scheduling gates: a gated pod costs nothing (no solve, no bind, no Events) until its
gates are removed; then the gang is placed at once."""

from __future__ import annotations

import time

import pytest

from kube import api_path
from tests.integration.helpers import (
    NS,
    bound,
    events_for,
    pods_of,
    pool_nodes,
    statefulset,
    wait_until,
)

pytestmark = pytest.mark.integration
GATE = "example.com/quota"


def _events_about(kube, prefix: str) -> list[dict]:
    items = kube.get(api_path("", "v1", "events", NS))["items"]
    return [e for e in items if e["involvedObject"]["name"].startswith(prefix)]


def test_gated_gang_waits_quietly_then_binds_when_ungated(kube, phalanx):
    pool_nodes(kube, "pool-gate", 4, seed=71, fanout=(1, 1, 4))
    sts = statefulset("gated", 4, "pool-gate")
    sts["spec"]["template"]["spec"]["schedulingGates"] = [{"name": GATE}]
    kube.create(api_path("apps", "v1", "statefulsets", NS), sts)
    wait_until(lambda: len(pods_of(kube, "gated")) == 4, 60, "4 gated pods created")
    time.sleep(5)  # several scheduling cycles and timer ticks
    assert bound(pods_of(kube, "gated")) == []
    # No bind attempts, no FailedScheduling loop: the old behaviour wrote thousands here.
    noisy = [e for e in _events_about(kube, "gated") if e["reason"] in
             ("FailedScheduling", "Scheduled", "PartiallyBound")]
    assert noisy == []
    for pod in pods_of(kube, "gated"):
        kube.call("PATCH", api_path("", "v1", "pods", NS, pod["metadata"]["name"]),
                  body={"spec": {"schedulingGates": None}},
                  content_type="application/merge-patch+json")
    wait_until(lambda: len(bound(pods_of(kube, "gated"))) == 4, 60, "bound once ungated")
    wait_until(lambda: any(e["reason"] == "Scheduled" for e in events_for(kube, "gated-0")),
               30, "Scheduled event")
