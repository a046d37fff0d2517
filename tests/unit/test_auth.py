"""The secure API's access rules on hand-built state: which permission each path needs,
how long answers are cached, and what callers see (the reviews are a double of
Phalanx's own Delegated; tests/integration/test_secure.py asks the real API server)."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient

from scheduler.api import build_app
from scheduler.api.auth import (
    Caller,
    Delegated,
    Need,
    Scope,
    need_of,
)
from scheduler.gang import GangKey
from tests.unit.api_state import HandBuilt, Reviews, add_gang, cluster
from topology.presets import PRESETS


@pytest.mark.parametrize(("path", "need"), [
    ("/healthz", Need(Scope.OPEN)),
    ("/readyz", Need(Scope.OPEN)),
    ("/metrics", Need(Scope.URL, path="/metrics")),
    ("/v1/topology", Need(Scope.URL, path="/v1/topology")),
    ("/v1/groups", Need(Scope.CALLER)),
    ("/v1/groups/", Need(Scope.CALLER)),
    ("/v1/groups/team-a/train", Need(Scope.NAMESPACE, namespace="team-a")),
    ("/v1/groups/team-a/train/explain", Need(Scope.NAMESPACE, namespace="team-a")),
    ("/openapi.json", Need(Scope.CALLER)),
    ("/nowhere", Need(Scope.CALLER)),
])
def test_each_path_needs_what_the_module_says(path, need):
    assert need_of(path) == need


@pytest.fixture(scope="module")
def state() -> HandBuilt:
    source = HandBuilt(cluster())
    add_gang(source, "train", 8)
    record = copy.copy(source.gangs[GangKey("StatefulSet", "ml", "train")])
    record.key = GangKey("StatefulSet", "other", "train")
    source.gangs[record.key] = record
    return source


@pytest.fixture
def setup(state):
    now = [1000.0]
    reviews = Reviews({"t-ml": Caller("ml-reader"), "t-ops": Caller("ops")},
                      {("ml-reader", "get", "ml"), ("ml-reader", "list", "ml"),
                       ("ops", "get", "/metrics")})
    delegated = Delegated(reviews, clock=lambda: now[0])
    return TestClient(build_app(state, PRESETS["aws"].keys, delegated)), reviews, now


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_401_without_a_token_or_with_one_the_server_refuses(setup):
    client, _, _ = setup
    assert client.get("/v1/groups").status_code == 401
    assert client.get("/v1/groups", headers={"Authorization": "Basic eDp5"}).status_code == 401
    assert client.get("/v1/groups", headers=_as("t-unknown")).status_code == 401
    assert client.get("/healthz").status_code == 200


def test_403_names_the_caller_and_what_is_missing(setup):
    client, _, _ = setup
    assert client.get("/v1/groups/ml/train", headers=_as("t-ml")).status_code == 200
    denied = client.get("/v1/groups/other/train", headers=_as("t-ml"))
    assert denied.status_code == 403
    assert denied.json()["detail"] == ('forbidden: user "ml-reader" may not get pods in '
                                       'namespace "other"')
    assert client.get("/metrics", headers=_as("t-ml")).status_code == 403
    assert client.get("/metrics", headers=_as("t-ops")).status_code == 200
    assert client.get("/v1/topology", headers=_as("t-ops")).status_code == 403


def test_the_list_keeps_the_namespaces_the_caller_may_list(setup):
    client, _, _ = setup
    listed = client.get("/v1/groups", headers=_as("t-ml")).json()["groups"]
    assert {(g["namespace"], g["name"]) for g in listed} == {("ml", "train")}
    assert client.get("/v1/groups", headers=_as("t-ops")).json()["groups"] == []


def test_answers_are_cached_ten_seconds(setup):
    client, reviews, now = setup
    for _ in range(5):
        assert client.get("/v1/groups/ml/train", headers=_as("t-ml")).status_code == 200
    assert reviews.asked == 2  # one TokenReview, one SubjectAccessReview
    now[0] += 11
    assert client.get("/v1/groups/ml/train", headers=_as("t-ml")).status_code == 200
    assert reviews.asked == 4


def test_503_when_the_api_server_cannot_answer(setup):
    client, reviews, _ = setup
    reviews.down = True
    reply = client.get("/v1/groups", headers=_as("t-new"))
    assert reply.status_code == 503 and "TokenReview" in reply.json()["detail"]


def test_self_signed_pair_loads_and_a_rewritten_pair_is_reloaded(tmp_path):
    import os
    import ssl

    from scheduler.api.tls import Reloader, ServingPair, self_signed

    pair = self_signed()
    assert pair.generated and oct(os.stat(pair.key_file).st_mode & 0o777) == "0o600"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert_file, pair.key_file)
    reloader = Reloader(context, ServingPair(pair.cert_file, pair.key_file))
    assert reloader.check() is False  # nothing changed
    other = self_signed()
    os.replace(other.cert_file, pair.cert_file)
    assert reloader.check() is False  # the new certificate with the old key: refused, kept
    os.replace(other.key_file, pair.key_file)
    assert reloader.check() is True and reloader.reloads == 1
