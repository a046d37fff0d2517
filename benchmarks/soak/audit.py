"""The scheduler's requests, from the API server's audit log: the soak's apiserver logs
every request of the scheduler's ServiceAccount at Metadata level (and nothing else), so
what a waiting gang costs is counted where it lands, not where the scheduler says it
sent it. A request belongs to the gang whose name starts its object's name (soak gangs
are named `gNNNN-kind`; their pods, PodGroups and Events carry that prefix)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from benchmarks.soak.replicas import USER

GANG_NAME = re.compile(r"^(g\d{4}-[a-z]+)")


def policy() -> str:
    return f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["{USER}"]
- level: None
"""


BIND = "create pods/binding"
"""How gang_requests names a bind."""


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def gang_requests(log: Path) -> Iterator[tuple[float, str, str]]:
    """(wall time, gang, verb/resource/subresource) of every scheduler request naming a
    soak gang's object (binds included: `BIND`); watches and lists name none."""
    if not log.exists():
        return
    with open(log, "rb") as lines:
        for line in lines:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if (event.get("user") or {}).get("username") != USER:
                continue
            ref = event.get("objectRef") or {}
            match = GANG_NAME.match(ref.get("name") or "")
            if match is None:
                continue
            yield (_epoch(event["requestReceivedTimestamp"]), match.group(1),
                   f"{event.get('verb')} {ref.get('resource')}/{ref.get('subresource', '')}")
