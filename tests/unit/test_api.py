"""The explain API on hand-built scheduler state (FastAPI TestClient, no cluster)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from scheduler.api import build_app, serve
from scheduler.cli import main
from scheduler.gang import GangKey
from solver.result import Placement
from tests.unit.api_state import LAYER3, HandBuilt, add_gang, add_invalid, cluster
from topology.presets import PRESETS

PLACED = GangKey("StatefulSet", "ml", "placed")


@pytest.fixture(scope="module")
def src() -> HandBuilt:
    source = HandBuilt(cluster())
    add_gang(source, "placed", 48)
    add_gang(source, "too-big", 4000)
    add_gang(source, "rack-bound", 40, annotations={"phalanx.dev/required-topology": LAYER3})
    add_invalid(source, "broken", "PodGroup ml/broken: field spec.minMember: expected an "
                                  "integer >= 1, got 'x'")
    add_gang(source, "shared", 8)  # a StatefulSet and a Job of one name: two gangs
    add_gang(source, "shared", 4, kind="Job")
    source.metrics.solve_seconds.labels("placed").observe(0.12)
    source.metrics.bind_errors.labels("409").inc()
    return source


@pytest.fixture(scope="module")
def client(src: HandBuilt) -> TestClient:
    return TestClient(build_app(src, PRESETS["aws"].keys))


def test_groups_lists_every_gang_with_its_state(client: TestClient) -> None:
    body = client.get("/v1/groups").json()
    states = {(g["kind"], g["name"]): g["state"] for g in body["groups"]}
    assert states == {("StatefulSet", "placed"): "Bound",
                      ("StatefulSet", "too-big"): "Pending: unschedulable",
                      ("StatefulSet", "rack-bound"): "Pending: unschedulable",
                      ("PodGroup", "broken"): "Pending: invalid",
                      ("StatefulSet", "shared"): "Bound", ("Job", "shared"): "Bound"}
    placed = next(g for g in body["groups"] if g["name"] == "placed")
    assert placed["size"] == placed["min_member"] == placed["bound"] == 48
    assert placed["kind"] == "StatefulSet" and placed["age_s"] > 0


def test_group_detail_lists_pods_in_rank_order_with_the_api_view(
        client: TestClient, src: HandBuilt) -> None:
    state = src.gangs[PLACED]
    assert isinstance(state.result, Placement)
    src.bound.pop("ml/placed-7")  # its binding not seen by the watch yet
    try:
        body = client.get("/v1/groups/ml/placed").json()
    finally:
        src.bound["ml/placed-7"] = state.result.assignments[7].node
    assert [p["rank"] for p in body["pods"]] == list(range(48))
    assert [(p["pod"], p["node"]) for p in body["pods"]] == [
        (a.pod, a.node) for a in state.result.assignments]
    assert [p["pod"] for p in body["pods"] if not p["bound"]] == ["placed-7"]
    assert body["metrics"]["domains_used"] == state.result.metrics.domains_used
    assert body["metrics"]["lower_bound"][LAYER3] == state.result.metrics.lower_bound[LAYER3]
    assert body["solver"]["algorithm"] == "cpsat" and body["solve_s"] >= 0
    assert body["bind_s"] == 0.25
    assert [t["state"] for t in body["transitions"]] == ["Waiting for members", "Bound"]
    # Nothing of the pod spec leaks: no image, no env.
    text = client.get("/v1/groups/ml/placed").text
    assert "hunter2" not in text and "secret-image" not in text


def test_explain_of_a_placed_gang_shows_chosen_domains_and_runners_up(
        client: TestClient, src: HandBuilt) -> None:
    body = client.get("/v1/groups/ml/placed/explain").json()
    assert body["verdict"] == "placed"
    result = src.gangs[PLACED].result
    assert isinstance(result, Placement)
    for level in body["levels"]:
        assert sum(room["placed"] for room in level["chosen"]) == 48
        assert level["used"] == len(level["chosen"]) == result.metrics.domains_used[level["level"]]
        chosen = {room["domain"] for room in level["chosen"]}
        assert not chosen & {room["domain"] for room in level["runners_up"]}
        assert all(room["leftover"] == room["fits"] - room["placed"] >= 0
                   for room in level["chosen"])
    rack = next(level for level in body["levels"] if level["level"] == LAYER3)
    # 48 pods of whole nodes need two 32-node racks: exactly the lower bound.
    assert rack["used"] == rack["lower_bound"] == 2
    assert "the fewest" in rack["why"]


def test_explain_of_an_impossible_gang_names_resource_level_and_remedy(
        client: TestClient) -> None:
    body = client.get("/v1/groups/ml/too-big/explain").json()
    assert body["verdict"] == "pending"
    assert body["code"] == "UnschedulableAndUnresolvable"
    assert body["shape"] == "8 nvidia.com/gpu" and body["demand"] == 4000
    assert body["cluster_fits"] == 256
    assert any("shrink" in r for r in body["remedies"])
    rack = client.get("/v1/groups/ml/rack-bound/explain").json()
    assert rack["code"] == "UnschedulableAndUnresolvable"
    assert f"required topology {LAYER3}" in rack["summary"]
    best = next(lf for lf in rack["levels_demand"] if lf["level"] == LAYER3)
    assert best["best_fits"] == 32 and best["demand"] == 40
    assert any("8 more pods" in r and "layer-3" in r for r in rack["remedies"])


def test_explain_of_an_invalid_gang_names_the_field(client: TestClient) -> None:
    body = client.get("/v1/groups/ml/broken/explain").json()
    assert body["verdict"] == "invalid" and "spec.minMember" in body["summary"]
    detail = client.get("/v1/groups/ml/broken").json()
    assert detail["pods"] == [] and "spec.minMember" in detail["reason"]


def test_unknown_group_is_a_404_with_a_message(client: TestClient) -> None:
    reply = client.get("/v1/groups/ml/nope")
    assert reply.status_code == 404
    assert "no gang ml/nope" in reply.json()["detail"]
    assert client.get("/v1/groups/ml/nope/explain").status_code == 404


def test_a_shared_name_is_a_409_listing_both_and_kind_selects_one(client: TestClient) -> None:
    for path in ("/v1/groups/ml/shared", "/v1/groups/ml/shared/explain"):
        reply = client.get(path)
        assert reply.status_code == 409, reply.text
        assert reply.json()["candidates"] == [{"kind": "Job", "name": "shared"},
                                              {"kind": "StatefulSet", "name": "shared"}]
        assert "?kind=" in reply.json()["detail"]
    job = client.get("/v1/groups/ml/shared", params={"kind": "Job"}).json()
    sts = client.get("/v1/groups/ml/shared", params={"kind": "StatefulSet"}).json()
    assert (job["kind"], job["size"], len(job["pods"])) == ("Job", 4, 4)
    assert (sts["kind"], sts["size"], len(sts["pods"])) == ("StatefulSet", 8, 8)
    explained = client.get("/v1/groups/ml/shared/explain", params={"kind": "Job"}).json()
    assert explained["kind"] == "Job" and explained["verdict"] == "placed"
    assert client.get("/v1/groups/ml/placed", params={"kind": "Job"}).status_code == 404
    assert client.get("/v1/groups/ml/placed", params={"kind": "job!"}).status_code == 422


@pytest.mark.parametrize("path", [
    "/v1/groups/Bad_NS/x", "/v1/groups/ml/UPPER", "/v1/groups/ml/-lead",
    "/v1/groups/" + "a" * 64 + "/x", "/v1/groups/ml/" + "b" * 254,
    "/v1/topology?limit=0", "/v1/topology?limit=abc", "/v1/topology?level=nope",
])
def test_malformed_names_and_parameters_are_422_with_the_field_named(
        client: TestClient, path: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and re.search(r"namespace|name|limit|level", detail)


def test_topology_counts_nodes_and_free_capacity_per_domain(
        client: TestClient, src: HandBuilt) -> None:
    body = client.get("/v1/topology").json()
    assert body["nodes"] == 256 and body["unlabelled_nodes"] == 0
    for level in body["levels"]:
        assert sum(d["nodes"] for d in level["domains"]) == 256
        assert sum(int(d["free"]["nvidia.com/gpu"]) for d in level["domains"]) == 256 * 8
    racks = client.get(f"/v1/topology?level={LAYER3}&limit=3").json()["levels"]
    tree = src.snapshot.tree
    layer3 = tree.levels.index(LAYER3)
    assert len(racks) == 1 and racks[0]["total_domains"] == tree.domain_count(layer3)
    assert len(racks[0]["domains"]) == 3 and racks[0]["truncated"]
    first = racks[0]["domains"][0]["domain"]
    prefix = first.rsplit("/", 1)[0]
    under = client.get("/v1/topology", params={"level": LAYER3, "prefix": prefix}).json()
    assert all(d["domain"].startswith(prefix) for d in under["levels"][0]["domains"])
    expected = sum(1 for path in tree.paths[layer3] if "/".join(path).startswith(prefix))
    assert under["levels"][0]["total_domains"] == expected < tree.domain_count(layer3)


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    assert 'phalanx_gangs{state="Bound"} 3.0' in text
    assert 'phalanx_gangs{state="Pending: unschedulable"} 2.0' in text
    assert 'phalanx_solve_seconds_count{result="placed"} 1.0' in text
    assert 'phalanx_bind_errors_total{code="409"} 1.0' in text
    assert "phalanx_leader 1.0" in text
    assert 'phalanx_cache_sync_age_seconds{resource="nodes"} 1.5' in text
    assert 'phalanx_cache_sync_age_seconds{resource="pods"} -1.0' in text
    assert "_created" not in text


def test_readyz_follows_caches_and_leadership(src: HandBuilt) -> None:
    client = TestClient(build_app(src, PRESETS["aws"].keys))
    assert client.get("/readyz").status_code == 200
    src.synced = False
    try:
        reply = client.get("/readyz")
        assert reply.status_code == 503 and reply.json()["caches_synced"] is False
    finally:
        src.synced = True
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_lists_every_route_with_response_models(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {"/healthz", "/readyz", "/metrics", "/v1/groups",
                                    "/v1/groups/{namespace}/{name}",
                                    "/v1/groups/{namespace}/{name}/explain", "/v1/topology"}
    detail = schema["paths"]["/v1/groups/{namespace}/{name}"]["get"]["responses"]
    assert "GroupDetail" in str(detail["200"]) and "404" in detail



@pytest.fixture(scope="module")
def server(src: HandBuilt) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = serve(src, f"127.0.0.1:{port}", PRESETS["aws"].keys)
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True


def test_phalanx_explain_renders_a_pending_gang_reasons_first(
        server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "ml/rack-bound", "--server", server]) == 2
    out = capsys.readouterr().out
    assert out.index("required topology") < out.index("To fit:")
    assert "network-node-layer-3" in out and "8 more pods" in out


def test_phalanx_explain_renders_the_domain_tree_of_a_placed_gang(
        server: str, capsys: pytest.CaptureFixture[str], src: HandBuilt) -> None:
    assert main(["explain", "ml/placed", "--server", server]) == 0
    out = capsys.readouterr().out
    result = src.gangs[PLACED].result
    assert isinstance(result, Placement)
    for rack in result.chosen[LAYER3]:
        assert rack.rsplit("/", 1)[-1] in out
    assert "Why:" in out and "the fewest" in out
    assert main(["explain", "ml/placed", "--server", server, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["verdict"] == "placed"


def test_phalanx_explain_errors_are_clear(server: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "ml/nope", "--server", server]) == 1
    assert "404: no gang ml/nope" in capsys.readouterr().err
    assert main(["explain", "not-a-name", "--server", server]) == 1
    assert "expected NAMESPACE/NAME" in capsys.readouterr().err
    assert main(["explain", "ml/x", "--server", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "cannot reach the explain API" in capsys.readouterr().err
    assert main(["explain", "ml/shared", "--server", server]) == 1
    assert "NAMESPACE/KIND/NAME" in capsys.readouterr().err
    assert main(["explain", "ml/Job/shared", "--server", server, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["kind"] == "Job"
