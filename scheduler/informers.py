"""The watches that keep the cluster cache current: nodes, every unfinished pod, the pods
that succeeded (finished members still count toward their gang), and the objects gang
sources read (PodGroups of three APIs, JobSets, LeaderWorkerSets,
training-operator jobs) once each is served (a CRD may be installed after the scheduler
starts).

`synced()` is what /readyz and the cycle ask: listed, and every watch connected; a watch
that cannot reach the API server makes the cache stale at once (no scheduling)."""

from __future__ import annotations

import time

from kube import KubeClient, Watcher
from kube.resources import (
    CSI_NODES,
    JOBSETS,
    LEADER_WORKER_SETS,
    NAMESPACES,
    NATIVE_POD_GROUPS,
    NODES,
    PDBS,
    POD_GROUPS,
    PODS,
    PVCS,
    PVS,
    STORAGE_CLASSES,
    TRAINING_JOBS,
    VOLCANO_POD_GROUPS,
    Resource,
)
from scheduler.cache import ClusterCache

UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"
WATCHED_OBJECTS = (NAMESPACES, PVCS, PVS, STORAGE_CLASSES, CSI_NODES, PDBS)
GANG_OBJECTS = (POD_GROUPS, NATIVE_POD_GROUPS, VOLCANO_POD_GROUPS, JOBSETS, LEADER_WORKER_SETS,
                *TRAINING_JOBS.values())
"""What gang sources read, watched once served (a CRD installed later is picked up):
few next to pods, and a watch tells a waiting gang at once that its object changed."""
OPTIONAL_CHECK_S = 10.0
"""How often an optional resource that is not served yet is looked for."""


def succeeded_of(scheduler_name: str) -> str:
    """The field selector of this scheduler's pods that ran to completion: members that
    still count toward their gang (a pod leaving the UNFINISHED watch is reported DELETED
    with its previous state, so that watch cannot tell a finished pod from a deleted
    one). Only this scheduler's: a cluster's completed pods are mostly other schedulers'
    batch Jobs, each decoded at every re-list otherwise, and a gang's waiting members
    are this scheduler's pods (another scheduler's pending pods are nobody's members)."""
    # As apimachinery's fields.EscapeValue: a value's \, comma and = are escaped.
    value = scheduler_name.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    return f"status.phase=Succeeded,spec.schedulerName={value}"


class Informers:
    def __init__(self, kube: KubeClient, cache: ClusterCache, scheduler_name: str,
                 optional: tuple[Resource, ...] = GANG_OBJECTS) -> None:
        self.kube, self.cache, self.optional = kube, cache, optional
        self.scheduler_name = scheduler_name
        self.watchers: list[Watcher] = []
        self._checked: dict[Resource, float] = {}

    def start(self) -> Informers:
        cache = self.cache
        self.watchers = [
            Watcher(self.kube, NODES.path(), name="nodes", convert=cache.parse_nodes,
                    on_replace=cache.install_nodes, on_event=cache.node_event,
                    wire=cache.node_wire),
            Watcher(self.kube, PODS.path(), name="pods", convert=cache.parse_pods,
                    on_replace=cache.install_pods, on_event=cache.pod_event,
                    wire=cache.pod_wire, query={"fieldSelector": UNFINISHED}),
            Watcher(self.kube, PODS.path(), name="succeeded-pods",
                    convert=cache.parse_finished, on_replace=cache.install_finished,
                    on_event=cache.finished_event, wire=cache.finished_wire,
                    query={"fieldSelector": succeeded_of(self.scheduler_name)}),
        ]
        # Namespaces (for namespaceSelector), and the claims, volumes and classes that
        # volume binding reads: small next to pods, always served.
        self.watchers += [self._object_watcher(r) for r in WATCHED_OBJECTS]
        for watcher in self.watchers:
            watcher.start()
        self.ensure_optional()
        return self

    def ensure_optional(self) -> None:
        """Starts watching each optional resource once it is served; cheap to call every
        cycle (it asks the API server at most every OPTIONAL_CHECK_S per resource)."""
        now = time.monotonic()
        for resource in self.optional:
            if any(w.name == resource.plural for w in self.watchers):
                continue
            if now - self._checked.get(resource, -1e9) < OPTIONAL_CHECK_S:
                continue
            self._checked[resource] = now
            if not self.served(resource):
                continue
            self.watchers.append(self._object_watcher(resource).start())

    def _object_watcher(self, resource: Resource) -> Watcher:
        cache = self.cache

        def replace(items: list[dict[str, object]]) -> None:
            cache.install_objects(resource, items)

        def event(kind: str, raw: dict[str, object]) -> None:
            cache.object_event(resource, kind, raw)

        return Watcher(self.kube, resource.path(), name=resource.plural,
                       on_replace=replace, on_event=event)

    def served(self, resource: Resource) -> bool:
        try:
            found = self.kube.get(resource.group_version_path)
        except Exception:
            return False
        return any(r.get("name") == resource.plural for r in found.get("resources") or ())

    def synced(self) -> bool:
        return bool(self.watchers) and all(w.synced.is_set() and not w.failing
                                           for w in self.watchers)

    def watch_ages(self) -> dict[str, float | None]:
        """Per watched resource, seconds since the server was last heard (None: stale)."""
        now = time.monotonic()
        return {w.name: (now - w.last_heard) if w.synced.is_set() and not w.failing else None
                for w in self.watchers}

    def relists(self) -> dict[str, int]:
        return {w.name: w.relists for w in self.watchers}

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(w.synced.wait(max(0.0, deadline - time.monotonic()))
                   for w in self.watchers)

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
