"""The explain API of a running `phalanx run`, checked against the API server's view."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from kube import api_path
from tests.integration.helpers import NS, pods_of, pool_nodes, statefulset, wait_until
from topology.presets import AWS_LAYER

pytestmark = pytest.mark.integration
LAYER3 = AWS_LAYER[2]
STS = api_path("apps", "v1", "statefulsets", NS)


def _get(phalanx, path: str, **params) -> httpx.Response:
    return httpx.get(f"{phalanx.url}{path}", params=params, timeout=10)


@pytest.fixture(scope="module")
def pool(kube, phalanx):
    return {n["metadata"]["name"]: n for n in pool_nodes(kube, "pool-x", 32, seed=41,
                                                          fanout=(1, 2, 16))}


def test_placed_gang_route_matches_the_api_server(kube, phalanx, pool):
    kube.create(STS, statefulset("ex-fit", 20, "pool-x"))
    wait_until(lambda: all(p["spec"].get("nodeName") for p in pods_of(kube, "ex-fit"))
               and len(pods_of(kube, "ex-fit")) == 20, 60, "ex-fit bound")

    def route_all_bound():
        reply = _get(phalanx, f"/v1/groups/{NS}/ex-fit")
        return reply.status_code == 200 and all(p["bound"] for p in reply.json()["pods"])
    wait_until(route_all_bound, 30, "the route shows every pod bound")
    body = _get(phalanx, f"/v1/groups/{NS}/ex-fit").json()
    api_nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods_of(kube, "ex-fit")}
    assert {p["pod"]: p["node"] for p in body["pods"]} == api_nodes
    assert [p["rank"] for p in body["pods"]] == list(range(20))
    racks = {pool[node]["metadata"]["labels"][LAYER3] for node in api_nodes.values()}
    assert body["metrics"]["domains_used"][LAYER3] == len(racks)
    assert body["metrics"]["domains_used"]["kubernetes.io/hostname"] == 20
    assert body["state"] == "Bound" and body["kind"] == "StatefulSet"
    assert body["size"] == body["bound"] == 20 and body["bind_s"] > 0
    assert [t["state"] for t in body["transitions"]][-2:] == ["Binding", "Bound"]
    explain = _get(phalanx, f"/v1/groups/{NS}/ex-fit/explain").json()
    assert explain["verdict"] == "placed"
    rack_level = next(level for level in explain["levels"] if level["level"] == LAYER3)
    assert {room["domain"].rsplit("/", 1)[-1] for room in rack_level["chosen"]} == racks
    metrics = _get(phalanx, "/metrics").text
    assert 'phalanx_gangs{state="Bound"}' in metrics
    bound_total = next(line for line in metrics.splitlines()
                       if line.startswith('phalanx_pods_bound_total{path="gang"}'))
    assert float(bound_total.split()[-1]) >= 20


def test_impossible_gang_explain_names_resource_and_level(kube, phalanx, pool):
    kube.create(STS, statefulset("ex-rack", 20, "pool-x",
                                 annotations={"phalanx.dev/required-topology": LAYER3}))
    kube.create(STS, statefulset("ex-huge", 200, "pool-x"))

    def pending(name: str) -> bool:
        reply = _get(phalanx, f"/v1/groups/{NS}/{name}/explain")
        return reply.status_code == 200 and reply.json()["verdict"] == "pending"
    wait_until(lambda: pending("ex-rack") and pending("ex-huge"), 60, "both pending")
    rack = _get(phalanx, f"/v1/groups/{NS}/ex-rack/explain").json()
    assert rack["shape"] == "8 nvidia.com/gpu"
    assert f"required topology {LAYER3}" in rack["summary"]
    assert any("layer-3" in remedy for remedy in rack["remedies"])
    huge = _get(phalanx, f"/v1/groups/{NS}/ex-huge/explain").json()
    assert "nvidia.com/gpu" in huge["summary"] and huge["demand"] == 200
    assert any(e["reason"] == "Insufficient nvidia.com/gpu" for e in huge["excluded"])
    assert not any(p["spec"].get("nodeName") for p in pods_of(kube, "ex-huge"))
    listed = {g["name"]: g["state"] for g in _get(phalanx, "/v1/groups").json()["groups"]}
    assert listed["ex-huge"] == listed["ex-rack"] == "Pending: unschedulable"
    cli = subprocess.run([sys.executable, "-m", "scheduler.cli", "explain", f"{NS}/ex-huge",
                          "--server", phalanx.url], capture_output=True, text=True, timeout=30)
    assert cli.returncode == 2, cli.stderr
    assert "Insufficient nvidia.com/gpu" in cli.stdout and "To fit:" in cli.stdout
    for name in ("ex-rack", "ex-huge"):
        kube.delete(api_path("apps", "v1", "statefulsets", NS, name))


def test_topology_route_counts_the_live_nodes(kube, phalanx, pool):
    body = _get(phalanx, "/v1/topology", level=LAYER3).json()
    nodes = kube.get(api_path("", "v1", "nodes"))["items"]
    assert body["nodes"] == len(nodes)
    assert sum(d["nodes"] for d in body["levels"][0]["domains"]) == len(nodes)
    assert _get(phalanx, "/v1/topology", level="bogus").status_code == 422
    assert _get(phalanx, f"/v1/groups/{NS}/no-such-gang").status_code == 404


def test_a_job_and_a_statefulset_of_one_name_are_two_gangs_each_explained(
        kube, phalanx, pool):
    """Gang identity is (kind, namespace, name): the two never share a record."""
    kube.create(STS, statefulset("twin", 6, "pool-x"))
    template = statefulset("twin", 1, "pool-x")["spec"]["template"]
    # KWOK completes Job pods a few seconds after they run; keep these running.
    template["metadata"]["annotations"] = {"pod-complete.stage.kwok.x-k8s.io/delay": "1h",
                                           "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "0s"}
    template["metadata"]["labels"] = {"app": "twin-job"}
    template["spec"]["restartPolicy"] = "Never"
    kube.create(api_path("batch", "v1", "jobs", NS), {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "twin", "namespace": NS},
        "spec": {"parallelism": 4, "completions": 4, "completionMode": "Indexed",
                 "template": template}})
    wait_until(lambda: len([p for p in pods_of(kube, "twin") if p["spec"].get("nodeName")])
               == 6 and len([p for p in pods_of(kube, "twin-job")
                             if p["spec"].get("nodeName")]) == 4, 90, "both gangs bound")
    listed = {(g["kind"], g["name"]): g for g in _get(phalanx, "/v1/groups").json()["groups"]}
    assert listed[("StatefulSet", "twin")]["size"] == 6
    assert listed[("Job", "twin")]["size"] == 4
    assert listed[("StatefulSet", "twin")]["state"] == listed[("Job", "twin")]["state"] \
        == "Bound"
    ambiguous = _get(phalanx, f"/v1/groups/{NS}/twin")
    assert ambiguous.status_code == 409
    assert {c["kind"] for c in ambiguous.json()["candidates"]} == {"Job", "StatefulSet"}
    for kind, app, size in (("StatefulSet", "twin", 6), ("Job", "twin-job", 4)):
        detail = _get(phalanx, f"/v1/groups/{NS}/twin", kind=kind).json()
        api_nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods_of(kube, app)}
        assert {p["pod"]: p["node"] for p in detail["pods"]} == api_nodes
        assert detail["kind"] == kind and len(detail["pods"]) == size
        explain = _get(phalanx, f"/v1/groups/{NS}/twin/explain", kind=kind).json()
        assert explain["verdict"] == "placed" and explain["kind"] == kind
    cli = subprocess.run([sys.executable, "-m", "scheduler.cli", "explain", f"{NS}/Job/twin",
                          "--server", phalanx.url], capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    kube.delete(api_path("apps", "v1", "statefulsets", NS, "twin"))
    kube.delete(api_path("batch", "v1", "jobs", NS, "twin"), propagationPolicy="Background")
