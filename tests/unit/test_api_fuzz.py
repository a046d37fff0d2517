"""The explain API fuzzed against its own OpenAPI schema (schemathesis): whatever the
path or query, no 5xx, and every reply matches the schema the server publishes."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from scheduler.api import build_app
from tests.unit.api_state import LAYER3, HandBuilt, add_gang, add_invalid, cluster
from topology.presets import PRESETS


def _source() -> HandBuilt:
    source = HandBuilt(cluster(nodes=96, fanout=(2, 2, 24)))
    add_gang(source, "a", 16)
    add_gang(source, "b", 900)
    add_gang(source, "c", 30, annotations={"phalanx.dev/required-topology": LAYER3})
    add_invalid(source, "d", "PodGroup ml/d: field spec.minMember: expected an integer >= 1")
    return source


schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(_source(), PRESETS["aws"].keys))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_replies_match_the_schema(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, response.text
    case.validate_response(response)
