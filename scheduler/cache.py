"""The cluster cache: nodes, every unfinished pod (any scheduler), PodGroups, and the
pods Phalanx has assumed but not yet seen bound.

Assumed pods, as in kube-scheduler's cache:

    Initial --assume--> Assumed --watch shows it bound--> Added
                           |  \\--bind failed: forget--> Initial (back to the queue)
                           \\--no confirmation before the deadline: expire--> Initial

An assumed pod counts against its node at once, so the next cycle cannot hand the same
room to another gang; a pod the watch shows bound is never forgotten.

`snapshot()` is the only way placement sees the cache: an immutable TopologySnapshot.
The domain tree is rebuilt only when a node changed (its generation moved).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler.kube import KubeClient, api_path
from scheduler.watch import Raw, Watcher
from topology.gcpause import gc_paused
from topology.presets import Preset
from topology.records import NodeRecord, PodRecord, RecordError, node_from_json, pod_from_json
from topology.snapshot import DomainTree, TopologySnapshot, build_tree, snapshot_of

POD_GROUPS = ("scheduling.x-k8s.io", "v1alpha1", "podgroups")
UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass(frozen=True)
class Assumed:
    pod: PodRecord
    node: str
    deadline: float


class ClusterCache:
    def __init__(self, kube: KubeClient, preset: Preset, *, assume_ttl_s: float = 30.0,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.kube, self.preset, self.assume_ttl_s = kube, preset, assume_ttl_s
        self.on_change = on_change or (lambda kind: None)
        self.lock = threading.RLock()
        self.nodes: dict[str, NodeRecord] = {}
        self.pods: dict[str, PodRecord] = {}
        self.pod_groups: dict[str, Raw] = {}
        self.assumed: dict[str, Assumed] = {}
        self.bad_objects: dict[str, str] = {}
        """Objects that could not be parsed, by kind/name: reported, never fatal."""
        self.node_generation = 0
        self._tree: tuple[int, DomainTree] | None = None
        self.watchers: list[Watcher] = []
        self._pod_group_checked = -1e9

    # -- watch handlers ---------------------------------------------------------------
    def _parse(self, kind: str, raw: Raw, parse: Callable[[Raw], Any]) -> Any | None:
        try:
            record = parse(raw)
        except RecordError as exc:
            meta = raw.get("metadata") or {}
            self.bad_objects[f"{kind}/{meta.get('namespace', '')}/{meta.get('name')}"] = str(exc)
            return None
        return record

    def _parse_all(self, kind: str, items: list[Raw], parse: Callable[[Raw], Any]) -> list[Any]:
        with gc_paused():
            records = [self._parse(kind, item, parse) for item in items]
        return [r for r in records if r is not None]

    def parse_nodes(self, items: list[Raw]) -> list[NodeRecord]:
        return self._parse_all("node", items, node_from_json)

    def install_nodes(self, records: list[NodeRecord]) -> None:
        with self.lock:
            self.nodes = {r.name: r for r in records}
            self.node_generation += 1
        self.on_change("nodes")

    def replace_nodes(self, items: list[Raw]) -> None:
        self.install_nodes(self.parse_nodes(items))

    def node_event(self, kind: str, raw: Raw) -> None:
        name = (raw.get("metadata") or {}).get("name")
        with self.lock:
            if kind == "DELETED":
                self.nodes.pop(str(name), None)
            else:
                record = self._parse("node", raw, node_from_json)
                if record is None:
                    return
                if self.nodes.get(record.name) == record:
                    return  # heartbeat: nothing placement sees changed
                self.nodes[record.name] = record
            self.node_generation += 1
        self.on_change("nodes")

    def parse_pods(self, items: list[Raw]) -> list[PodRecord]:
        return self._parse_all("pod", items, pod_from_json)

    def install_pods(self, records: list[PodRecord]) -> None:
        with self.lock:
            self.pods = {r.key: r for r in records}
            self._confirm_assumed()
        self.on_change("pods")

    def replace_pods(self, items: list[Raw]) -> None:
        self.install_pods(self.parse_pods(items))

    def pod_event(self, kind: str, raw: Raw) -> None:
        meta = raw.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(key, None)
                self.assumed.pop(key, None)
            else:
                record = self._parse("pod", raw, pod_from_json)
                if record is None:
                    return
                self.pods[key] = record
                if record.node_name or record.terminal:
                    # Only this pod's assumption can end here; expired ones are swept when
                    # usage is read. (Sweeping all on every event cost O(assumed) per event:
                    # ~3M steps while a 1,024-pod gang was bound.)
                    self.assumed.pop(key, None)
        # A pod gone (deleted, or finished: it leaves the unfinished-pods watch) frees room.
        self.on_change("capacity" if kind == "DELETED" else "pods")

    def replace_pod_groups(self, items: list[Raw]) -> None:
        with self.lock:
            self.pod_groups = {_key(item): item for item in items}
        self.on_change("podgroups")

    def pod_group_event(self, kind: str, raw: Raw) -> None:
        with self.lock:
            if kind == "DELETED":
                self.pod_groups.pop(_key(raw), None)
            else:
                self.pod_groups[_key(raw)] = raw
        self.on_change("podgroups")

    # -- assume cache -----------------------------------------------------------------
    def assume(self, pod: PodRecord, node: str) -> None:
        with self.lock:
            self.assumed[pod.key] = Assumed(pod, node, time.monotonic() + self.assume_ttl_s)

    def forget(self, key: str) -> None:
        """A bind that failed: the pod's room is free again (never for a bound pod)."""
        with self.lock:
            current = self.pods.get(key)
            if current is None or not current.node_name:
                self.assumed.pop(key, None)

    def _confirm_assumed(self) -> None:
        now = time.monotonic()
        for key in list(self.assumed):
            pod = self.pods.get(key)
            if pod is None or pod.node_name or self.assumed[key].deadline < now:
                del self.assumed[key]

    def is_assumed(self, key: str) -> bool:
        with self.lock:
            return key in self.assumed

    # -- reads ------------------------------------------------------------------------
    def usage(self) -> dict[str, dict[str, int]]:
        """Requests of every bound unfinished pod plus every assumed pod, per node."""
        used: dict[str, dict[str, int]] = {}
        with self.lock:
            self._confirm_assumed()
            charged = [(p.node_name, p.requests) for p in self.pods.values()
                       if p.consumes_capacity]
            charged += [(a.node, a.pod.requests) for a in self.assumed.values()]
        for node, requests in charged:
            slot = used.setdefault(node, {})
            for name, amount in requests.items():
                slot[name] = slot.get(name, 0) + amount
        return used

    def snapshot(self) -> TopologySnapshot:
        with self.lock:
            generation = self.node_generation
            nodes = list(self.nodes.values())
        if self._tree is None or self._tree[0] != generation:
            self._tree = (generation, build_tree(nodes, self.preset))
        return snapshot_of(self._tree[1], self.usage())

    def pending(self, scheduler_name: str) -> list[PodRecord]:
        with self.lock:
            return [p for p in self.pods.values()
                    if p.scheduler_name == scheduler_name and not p.node_name
                    and not p.deleting and not p.terminal and p.key not in self.assumed]

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> ClusterCache:
        self.watchers = [
            Watcher(self.kube, api_path("", "v1", "nodes"), name="nodes",
                    convert=self.parse_nodes, on_replace=self.install_nodes,
                    on_event=self.node_event),
            Watcher(self.kube, api_path("", "v1", "pods"), name="pods",
                    convert=self.parse_pods, on_replace=self.install_pods,
                    on_event=self.pod_event, query={"fieldSelector": UNFINISHED}),
        ]
        for watcher in self.watchers:
            watcher.start()
        self.ensure_pod_group_watch()
        return self

    def ensure_pod_group_watch(self) -> bool:
        """Starts watching PodGroups once their CRD is served (it may be installed after
        the scheduler starts); cheap to call every cycle, it checks at most every 10 s."""
        if any(w.name == "podgroups" for w in self.watchers):
            return True
        now = time.monotonic()
        if now - self._pod_group_checked < 10.0:
            return False
        self._pod_group_checked = now
        if not self.pod_groups_served():
            return False
        group, version, plural = POD_GROUPS
        watcher = Watcher(self.kube, api_path(group, version, plural), name="podgroups",
                          on_replace=self.replace_pod_groups, on_event=self.pod_group_event)
        self.watchers.append(watcher.start())
        return True

    def pod_groups_served(self) -> bool:
        group, version, plural = POD_GROUPS
        try:
            resources = self.kube.get(f"/apis/{group}/{version}")
        except Exception:
            return False
        return any(r.get("name") == plural for r in resources.get("resources") or ())

    def synced(self) -> bool:
        """Listed, and every watch currently connected: a watch that cannot reach the
        API server makes the cache stale at once (no scheduling, /readyz 503)."""
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
        for watcher in self.watchers:
            if not watcher.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()


def _key(raw: Raw) -> str:
    meta = raw.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
