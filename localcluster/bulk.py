"""Bulk creation of objects (synthetic nodes, existing load) through the real API, concurrently."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kube import ApiError, KubeClient
from kube.resources import NAMESPACES, NODES, PODS


@dataclass(frozen=True)
class BulkReport:
    created: int
    existed: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.created / self.seconds if self.seconds > 0 else 0.0


def collection_path(obj: dict[str, Any]) -> str:
    """The POST path of a core/v1 object (Node, Pod, Namespace, ...)."""
    resource = {"Node": NODES, "Pod": PODS, "Namespace": NAMESPACES}[obj["kind"]]
    return resource.path(obj["metadata"].get("namespace"))


def create_all(
    kube: KubeClient, objects: Iterable[dict[str, Any]], *, concurrency: int = 48,
    path_of: Callable[[dict[str, Any]], str] = collection_path,
) -> BulkReport:
    """Creates every object; one that already exists counts as `existed` (idempotent)."""
    items = list(objects)
    start = time.perf_counter()

    def create(obj: dict[str, Any]) -> bool:
        try:
            kube.create(path_of(obj), obj)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(create, items))
    created = sum(outcomes)
    return BulkReport(created, len(items) - created, time.perf_counter() - start)


def ensure_namespace(kube: KubeClient, name: str) -> None:
    try:
        kube.create(NAMESPACES.path(),
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as exc:
        if exc.status != 409:
            raise


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.5) -> float:
    """Polls until predicate() holds; returns the seconds waited or raises TimeoutError."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start
