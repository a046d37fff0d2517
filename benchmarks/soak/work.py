"""Putting the stream's objects on the cluster and taking them off again."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.soak.state import MAX_WAIT_S, Run
from benchmarks.soak.workload import GANG_LABEL, NS, SINGLE_LABEL
from kube import ApiError, KubeClient
from kube.resources import PODS
from localcluster.bulk import create_all


class Work:
    """Creates and deletes the stream's objects on a small thread pool (a 512-pod gang is
    512 creates), so the checks keep their one-second beat. Both retry through faults
    (an apiserver restart, a 429 storm): a lost delete would leave a gang holding its
    nodes for the rest of the run, unwatched."""

    RETRY_S = 300.0

    def __init__(self, kube: KubeClient, run: Run) -> None:
        self.kube, self.run = kube, run
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="soak-work")
        self.stopped = False

    def stop(self) -> None:
        """No retry outlives the run: the 60-minute soak's process waited out 300 s of
        retries against its deleted cluster before it could exit."""
        self.stopped = True
        self.pool.shutdown(wait=False, cancel_futures=True)

    def create(self, objects: list[tuple[str, dict[str, Any]]]) -> None:
        self.pool.submit(self._retried, "create", self._create, objects)

    def delete(self, objects: list[tuple[str, dict[str, Any]]], label: str, name: str) -> None:
        self.pool.submit(self._retried, f"delete {name}", self._delete, objects, label, name)

    def _retried(self, what: str, action: Callable[..., None], *args: Any) -> None:
        deadline = time.monotonic() + self.RETRY_S
        while True:
            try:
                action(*args)
                return
            except Exception as exc:  # whatever a fault does to one attempt: try again
                if self.stopped:
                    return
                if time.monotonic() > deadline:
                    self.run.log(f"{what} failed for good: {exc!r}")
                    return
                time.sleep(2.0)

    def _create(self, objects: list[tuple[str, dict[str, Any]]]) -> None:
        create_all(self.kube, [body for _, body in objects], concurrency=16,
                   path_of=_path_of(objects))

    def _delete(self, objects: list[tuple[str, dict[str, Any]]], label: str, name: str
                ) -> None:
        for path, body in reversed(objects):
            if body["kind"] == "Pod":
                continue
            try:
                self.kube.delete(f"{path}/{body['metadata']['name']}",
                                 propagationPolicy="Background")
            except ApiError as exc:
                if exc.status != 404:
                    raise
        self.kube.call("DELETE", PODS.path(NS), query={"labelSelector": f"{label}={name}"})


def _path_of(objects: list[tuple[str, dict[str, Any]]]) -> Callable[[dict[str, Any]], str]:
    paths = {id(body): path for path, body in objects}
    return lambda body: paths[id(body)]


def finish_due(run: Run, work: Work, now: float, run_s: float) -> None:
    for tracked in run.gangs.values():
        gang, state = tracked.gang, tracked.state
        if gang.deleted_at is not None:
            continue
        done = state.complete is not None and now >= state.complete + gang.lifetime_s
        gave_up = state.complete is None and now - gang.created_at > min(MAX_WAIT_S,
                                                                          run_s / 2)
        if done or gave_up:
            gang.deleted_at = now
            tracked.withdrawn = gave_up
            work.delete(gang.objects, GANG_LABEL, gang.name)
    for single in run.singles:
        if single.deleted_at is None and now >= single.created_at + single.lifetime_s:
            single.deleted_at = now
            work.delete(single.objects, SINGLE_LABEL, single.name)


