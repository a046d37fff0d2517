"""What every StructWire (pods', nodes') does alike: a watch's ERROR event decodes to its
Status, whatever the Status leaves out."""

import orjson
import pytest

from topology.records import NodeWire, PodWire, StructWire


@pytest.mark.parametrize("wire", [PodWire(), NodeWire()], ids=["pods", "nodes"])
def test_error_events_decode_to_their_status(wire: StructWire) -> None:
    kind, obj = wire.event(orjson.dumps({"type": "ERROR", "object": {
        "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired",
        "message": "too old"}}))
    assert kind == "ERROR" and wire.error(obj) == (410, "Expired", "too old")
    kind, obj = wire.event(orjson.dumps({"type": "ERROR", "object": {"kind": "Status"}}))
    assert wire.error(obj) == (500, "None", "None")
