"""pytest fixtures for tests against the real local control plane (and, on request, the
real workload controllers: `workload_controllers`).

`local_cluster` is session-scoped: one cluster per test run, torn down at the end whatever
happened (failing tests, Ctrl-C, SIGTERM). A run killed with SIGKILL leaves a stale
cluster that the next run's `up()` removes. When the control plane cannot start, every
test using it errors: it never skips.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from kube import KubeClient
from localcluster.cluster import LocalCluster


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    cluster = LocalCluster.for_this_process()
    try:
        cluster.up()
        yield cluster
    finally:
        try:
            cluster.down()
        finally:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def kube(local_cluster: LocalCluster) -> KubeClient:
    return local_cluster.kube()


@pytest.fixture(scope="session")
def workload_controllers(local_cluster: LocalCluster) -> list[str]:
    """The real JobSet, LeaderWorkerSet and training-operator controllers running on the
    session's cluster (built from their Go modules the first time; started once)."""
    local_cluster.start_controllers(("jobset", "lws", "training-operator"))
    return local_cluster.running_controllers
