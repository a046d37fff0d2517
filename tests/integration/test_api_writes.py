"""What gangs that cannot be placed cost the API server: a handful of writes a minute
each, counted from the apiserver's own audit log (one entry per write request, with the
client's user agent; `apiserver_request_total` has no user-agent label)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from kube import ApiError, api_path
from localcluster.cluster import LocalCluster
from tests.integration.helpers import (
    NS,
    POOL,
    create_all,
    ensure_namespace,
    events_for,
    group_pods,
    install_pod_group_crd,
    pod_group,
    pod_group_path,
    pool_nodes,
    scrape,
    start_phalanx,
    statefulset,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration
WRITES = ("create", "update", "patch", "delete", "deletecollection")
AUDIT = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""
GANGS_PER_KIND = 4
WINDOW_S = 60.0
BUDGET_PER_GANG = 5
"""Writes one stuck gang may cost in the window (the report interval is 30 s: at most two
reports, each the gang object's Event and, for a PodGroup, a status patch)."""
LAYER3 = "topology.k8s.aws/network-node-layer-3"


@pytest.fixture(scope="module")
def audited():
    own = LocalCluster.for_this_process("writes", audit_policy=AUDIT)
    try:
        own.up()
        yield own
    finally:
        own.down()


def _phalanx_writes(log_path, since: float, until: float) -> list[dict]:
    out = []
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        if not entry.get("userAgent", "").startswith("phalanx-scheduler/") or \
                entry["verb"] not in WRITES:
            continue
        stamp = time.mktime(time.strptime(entry["requestReceivedTimestamp"][:19],
                                          "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if since <= stamp <= until:
            out.append(entry)
    return out


def _fill(kube, nodes: list[str]) -> None:
    """Pods bound by name (no scheduler) that take every GPU of the given nodes."""
    create_all(kube, [{"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"filler-{i}", "namespace": NS},
                       "spec": {"nodeName": node, "containers": [{
                           "name": "c", "image": "x", "resources": {
                               "limits": {"nvidia.com/gpu": "8"}}}]}}
                      for i, node in enumerate(nodes)])


def _stuck_gangs(kube) -> list[str]:
    """Twenty gangs that cannot be placed, of every kind: one that would fit were the
    cluster emptier (Unschedulable: solved again whenever room comes and goes), gated,
    invalid, a required level no domain holds (Unresolvable), refused (a DRA claim)."""
    names = []
    for i in range(GANGS_PER_KIND):
        big = f"big-{i}"
        kube.create(api_path("apps", "v1", "statefulsets", NS),
                    statefulset(big, 6, "pool-w"))
        gated = statefulset(f"gated-{i}", 2, "pool-w")
        gated["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "example.com/hold"}]
        kube.create(api_path("apps", "v1", "statefulsets", NS), gated)
        bad = f"bad-{i}"
        kube.create(pod_group_path(), pod_group(bad, 0))
        create_all(kube, group_pods(bad, 2, "pool-w"))
        rack = statefulset(f"rack-{i}", 12, "pool-w",
                           annotations={"phalanx.dev/required-topology": LAYER3})
        kube.create(api_path("apps", "v1", "statefulsets", NS), rack)
        dra = statefulset(f"dra-{i}", 1, "pool-w")
        dra["spec"]["template"]["spec"]["resourceClaims"] = [
            {"name": "gpu", "resourceClaimName": "gpu-claim"}]
        kube.create(api_path("apps", "v1", "statefulsets", NS), dra)
        names += [big, f"gated-{i}", bad, f"rack-{i}", f"dra-{i}"]
    return names


def _churn(kube, stop: threading.Event) -> None:
    """Room comes and goes: a 2-GPU pod of kube-scheduler's stays 4 s and is gone 4 s,
    so the unschedulable gangs are solved again (on the deletion, and on their 2 s retry
    timer while it is there) and their reason's numbers change."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "churn", "namespace": NS},
           "spec": {"nodeSelector": {POOL: "pool-w"}, "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "x", "resources": {
                        "limits": {"nvidia.com/gpu": "2"}}}]}}
    path = api_path("", "v1", "pods", NS)
    while not stop.is_set():
        try:
            kube.create(path, pod)
            stop.wait(4.0)
            kube.delete(f"{path}/churn", gracePeriodSeconds=0)
            wait_until(lambda: not kube.get(path, fieldSelector="metadata.name=churn")["items"],
                       30, "churn pod gone", interval=0.2)
        except (ApiError, TimeoutError):
            pass
        stop.wait(4.0)


def test_twenty_stuck_gangs_cost_a_handful_of_writes_a_minute(audited, tmp_path):
    kube = audited.kube()
    ensure_namespace(kube, NS)
    install_pod_group_crd(kube)
    nodes = pool_nodes(kube, "pool-w", 16, seed=111, fanout=(1, 2, 8))
    _fill(kube, sorted(n["metadata"]["name"] for n in nodes)[:12])  # 4 nodes left free
    process = start_phalanx(audited.kubeconfig, tmp_path / "writes.log",
                            "unschedulableRetrySeconds: 2\n")
    stop = threading.Event()
    try:
        names = _stuck_gangs(kube)
        # Every gang's first report is out (its own Event), before the window opens.
        for name in names:
            if name.startswith("gated"):
                continue
            wait_until(lambda n=name: events_for(kube, n), 90, f"first report of {name}")
        time.sleep(5)
        churner = threading.Thread(target=_churn, args=(kube, stop), daemon=True)
        churner.start()
        started = time.time()
        time.sleep(WINDOW_S)
        ended = time.time()
        stop.set()
        churner.join(30)
        time.sleep(3)  # the audit log is written after each request completes
        writes = _phalanx_writes(audited.audit_log, started, ended)
        by_resource = Counter(" ".join((w["verb"], w["objectRef"]["resource"],
                                        w["objectRef"].get("subresource", "")))
                              for w in writes)
        print(f"phalanx writes in {ended - started:.0f}s with {len(names)} stuck gangs: "
              f"{len(writes)} {dict(by_resource)}; names: "
              f"{sorted(w['objectRef'].get('name', '') for w in writes)}")
        assert not any(w["objectRef"]["resource"] == "pods" for w in writes)  # no binds
        solves = scrape(process.url, 'phalanx_solve_seconds_count{result="unschedulable"}')
        assert solves > 20 * GANGS_PER_KIND  # the churn did make them solve again...
        changed = [w for w in writes if w["objectRef"].get("name", "").startswith("big")]
        assert changed  # ...and their reason change: reported, but seldom
        assert len(writes) <= BUDGET_PER_GANG * len(names), dict(by_resource)
        per_gang = Counter(next((n for n in names
                                 if w["objectRef"].get("name", "").startswith(n)), "other")
                           for w in writes)
        assert max(per_gang.values(), default=0) <= BUDGET_PER_GANG, per_gang
        gated = [w for w in writes if w["objectRef"].get("name", "").startswith("gated")]
        assert gated == []
    finally:
        stop.set()
        stop_process(process)
