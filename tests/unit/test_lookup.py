"""ApiLookup: objects read from the API server are remembered a few seconds, and only
as long as anything may still ask for them."""

from __future__ import annotations

from typing import Any

from kube.resources import JOBS
from scheduler.lookup import PRUNE_FLOOR, ApiLookup


class Counting:
    """The KubeClient's `get`, counted."""

    def __init__(self) -> None:
        self.gets = 0

    def get(self, path: str) -> dict[str, Any]:
        self.gets += 1
        return {"metadata": {"name": path.rsplit("/", 1)[1]}}


def test_lookups_are_remembered_for_their_ttl_and_then_forgotten() -> None:
    now = [0.0]
    kube = Counting()
    lookup = ApiLookup(kube, ttl_s=5.0, clock=lambda: now[0])
    lookup.get(JOBS, "ns", "a")
    lookup.get(JOBS, "ns", "a")
    assert kube.gets == 1
    for index in range(10 * PRUNE_FLOOR):  # a job each, each looked up once
        now[0] += 1.0
        lookup.get(JOBS, "ns", f"job-{index}")
    assert len(lookup._seen) <= PRUNE_FLOOR  # not every job ever seen
    lookup.get(JOBS, "ns", f"job-{10 * PRUNE_FLOOR - 1}")
    assert kube.gets == 1 + 10 * PRUNE_FLOOR  # the recent one is still remembered
