"""Reading the objects gang sources ask for: watched kinds from the cache, others (a
StatefulSet's replicas, a Job's parallelism) from the API server, remembered a few
seconds so a cycle over many gangs costs one GET per object."""

from __future__ import annotations

import time
from collections.abc import Callable

from kube import ApiError, KubeClient
from kube.resources import Resource
from scheduler.cache import ClusterCache, Raw

PRUNE_FLOOR = 1024
"""Lookups kept before expired ones are dropped (then twice what is left)."""


class ApiLookup:
    def __init__(self, kube: KubeClient, ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.ttl_s, self.clock = kube, ttl_s, clock
        self._seen: dict[tuple[Resource, str, str], tuple[float, Raw | None]] = {}
        self._prune_at = PRUNE_FLOOR

    def get(self, resource: Resource, namespace: str, name: str) -> Raw | None:
        key = (resource, namespace, name)
        hit = self._seen.get(key)
        if hit is not None and self.clock() - hit[0] < self.ttl_s:
            return hit[1]
        try:
            found: Raw | None = self.kube.get(resource.path(namespace, name))
        except ApiError as exc:
            if exc.status != 404:
                raise
            found = None
        now = self.clock()
        self._seen[key] = (now, found)
        if len(self._seen) >= self._prune_at:
            # Objects looked up once (a job long gone) would otherwise stay for ever.
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.ttl_s}
            self._prune_at = max(PRUNE_FLOOR, 2 * len(self._seen))
        return found


class CachedLookup:
    """Watched resources from the cache (None when absent: the watch is authoritative);
    the rest from `fallback`."""

    def __init__(self, cache: ClusterCache, fallback: ApiLookup) -> None:
        self.cache, self.fallback = cache, fallback

    def get(self, resource: Resource, namespace: str, name: str) -> Raw | None:
        if self.cache.watched(resource):
            return self.cache.get_object(resource, namespace, name)
        return self.fallback.get(resource, namespace, name)
