"""The topology map page on hand-built state: what it draws, whose gangs it shows, and
that it escapes what it did not write (the browser test, tests/integration/test_ui.py,
runs its script in Chromium against a real cluster)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from scheduler.api import build_app
from scheduler.api.auth import Caller, Delegated
from scheduler.api.page import MAX_LEAVES
from scheduler.api.ui import HIDDEN
from solver.result import Placement
from tests.unit.api_state import HandBuilt, Reviews, add_gang, add_invalid, cluster
from topology.presets import PRESETS


class Parsed(HTMLParser):
    """Elements by class, with their attributes and text (enough to assert on a page)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.open: list[int] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))
        if tag not in ("meta", "br", "input"):
            self.open.append(len(self.elements) - 1)

    def handle_endtag(self, tag: str) -> None:
        if self.open:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        for index in self.open:
            self.elements[index][2].append(data)

    def having(self, css_class: str) -> list[tuple[dict[str, str], str]]:
        return [(attrs, "".join(text)) for _, attrs, text in self.elements
                if css_class in attrs.get("class", "").split()]


@pytest.fixture(scope="module")
def state() -> HandBuilt:
    source = HandBuilt(cluster())
    add_gang(source, "train", 40)
    add_gang(source, "huge", 400)  # 256 nodes: cannot fit
    add_invalid(source, "broken", 'annotation "x": expected <level>, got "</p><b>"')
    return source


@pytest.fixture
def client(state: HandBuilt) -> TestClient:
    return TestClient(build_app(state, PRESETS["aws"].keys))


def test_the_map_has_every_bottom_domain_coloured_and_the_footprint_of_each_placed_gang(
        client: TestClient, state: HandBuilt) -> None:
    reply = client.get("/ui")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    page = Parsed(reply.text)
    tree = state.snapshot.tree
    leaves = page.having("leaf")
    assert len(leaves) == tree.domain_count(tree.depth - 1) <= MAX_LEAVES
    assert all("background:hsl(" in attrs["style"] for attrs, _ in leaves)
    rows = {attrs["data-gang"]: attrs for attrs, _ in page.having("gang")}
    assert set(rows) == {"ml/StatefulSet/train", "ml/StatefulSet/huge", "ml/PodGroup/broken"}
    placed = next(r for r in state.gangs.values() if r.key.name == "train").result
    assert isinstance(placed, Placement)
    racks = {int(tree.domain_of[-1][tree.index[a.node]]) for a in placed.assignments}
    assert {int(x) for x in rows["ml/StatefulSet/train"]["data-leaves"].split()} == racks
    assert rows["ml/StatefulSet/huge"]["data-leaves"] == ""


def test_pending_gangs_show_their_reason_and_remedies(client: TestClient,
                                                      state: HandBuilt) -> None:
    page = Parsed(client.get("/ui").text)
    pending = {attrs["data-gang"]: text for attrs, text in page.having("pending")}
    assert set(pending) == {"ml/StatefulSet/huge", "ml/PodGroup/broken"}
    huge = next(r for r in state.gangs.values() if r.key.name == "huge")
    assert huge.remedies and all(remedy in pending["ml/StatefulSet/huge"]
                                 for remedy in huge.remedies)
    assert 'got "</p><b>"' in pending["ml/PodGroup/broken"]  # text, not markup


def test_the_namespace_filter_keeps_its_choices_and_refuses_a_malformed_name(
        client: TestClient) -> None:
    page = Parsed(client.get("/ui", params={"namespace": "elsewhere"}).text)
    assert page.having("gang") == []
    options = [attrs.get("value") for tag, attrs, _ in page.elements if tag == "option"]
    assert options == ["", "ml"]
    bad = client.get("/ui", params={"namespace": "Not_A_Namespace"})
    assert bad.status_code == 422 and "namespace" in bad.json()["detail"]


def test_the_refreshed_part_is_the_same_content_without_the_page_around_it(
        client: TestClient) -> None:
    whole, part = client.get("/ui").text, client.get("/ui/content").text
    assert "<html" not in part and "<script" not in part
    assert part in whole


def test_on_the_secure_port_a_caller_sees_only_what_the_json_routes_would_show(
        state: HandBuilt) -> None:
    reviews = Reviews({"t-ml": Caller("ml-reader"), "t-ops": Caller("ops"),
                       "t-other": Caller("other")},
                      {("ml-reader", "list", "ml"), ("ops", "list", "ml"),
                       ("ops", "get", "/v1/topology")})
    client = TestClient(build_app(state, PRESETS["aws"].keys, Delegated(reviews)))
    assert client.get("/ui").status_code == 401
    assert client.get("/ui/content").status_code == 401
    ml = Parsed(client.get("/ui", headers={"Authorization": "Bearer t-ml"}).text)
    assert len(ml.having("gang")) == 3
    assert ml.having("leaf") == [] and ml.having("hidden-map")[0][1] == HIDDEN
    ops = Parsed(client.get("/ui", headers={"Authorization": "Bearer t-ops"}).text)
    assert len(ops.having("gang")) == 3 and ops.having("leaf")
    other = Parsed(client.get("/ui", headers={"Authorization": "Bearer t-other"}).text)
    assert other.having("gang") == []
