"""The API server's view, kept current by two watches (pods, nodes) and judged every
second: a watch is the apiserver's own account of every change, at a fraction of what
listing thousands of pods each second would cost the machine under test. After an
apiserver or etcd restart the watches re-list (kube.watch), so the view heals with it.

The view is kept the way the judge reads it: each object parsed once, when its event
arrives (PodView, NodeView), with every node's usage and every gang's pods updated as it
changes. The 60-minute soak's first judge re-parsed ~10,000 pods and 2,000 nodes every
second; the watch threads, sharing the GIL with it, fell minutes behind.

How far behind the view is, is measured, not guessed: a beacon pod (no scheduler takes
it) has an annotation written with this process's clock every BEACON_EVERY_S; the pod
watch's copy of it says how old the view is (`lag_s`). The judge pauses while the view
is older than it may be.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from benchmarks.soak.invariants import NodeView, PodView
from benchmarks.soak.workload import GANG_LABEL, NS
from kube import NO_RETRY, KubeClient, Watcher
from kube.resources import NODES, PODS

BEACON = "soak-beacon"
BEACON_KEY = "soak.phalanx.dev/written"
BEACON_EVERY_S = 2.0


@dataclass(frozen=True)
class Moment:
    """The view at one instant, copied out of the lock for the judge."""

    nodes: dict[str, NodeView]
    used: dict[str, Counter[str]]
    gangs: dict[str, list[PodView]]
    changed: list[PodView]
    """Pods added or modified since the previous moment (for the rebind ledger)."""
    pods: int
    """Pods the API server holds (what every scheduler's cache follows)."""


class View:
    """Pods and nodes, parsed as they change; usage per node and pods per gang kept with
    them."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.lock = threading.Lock()
        self.pods: dict[str, PodView] = {}
        self.nodes: dict[str, NodeView] = {}
        self.used: dict[str, Counter[str]] = {}
        self.gangs: dict[str, dict[str, PodView]] = {}
        self.changed: list[PodView] = []
        self.written: deque[float] = deque()
        """Beacon values written and not yet seen by the pod watch (monotonic clock)."""
        self.lags: list[float] = []
        self.stopped = threading.Event()
        self.watchers = [
            Watcher(kube, PODS.path(), name="soak-pods",
                    on_replace=self._replace_pods, on_event=self._pod_event),
            Watcher(kube, NODES.path(), name="soak-nodes",
                    on_replace=self._replace_nodes, on_event=self._node_event),
        ]
        self._beacon = threading.Thread(target=self._write_beacon, name="soak-beacon",
                                        daemon=True)

    def start(self) -> View:
        self.kube.create(PODS.path(NS), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": BEACON, "namespace": NS},
            "spec": {"schedulerName": "soak-nobody",
                     "containers": [{"name": "c", "image": "beacon"}]}})
        for watcher in self.watchers:
            watcher.start()
        for watcher in self.watchers:
            if not watcher.synced.wait(60):
                raise TimeoutError(f"watch {watcher.name} not synced within 60 s")
        self._beacon.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        for watcher in self.watchers:
            watcher.stop()

    @property
    def current(self) -> bool:
        return all(w.synced.is_set() and not w.failing for w in self.watchers)

    def lag_s(self) -> float:
        """How long the oldest beacon write the watch has not shown yet has been out
        (writes that failed included: a view nobody can show to be current is not)."""
        with self.lock:
            return time.monotonic() - self.written[0] if self.written else 0.0

    def _write_beacon(self) -> None:
        path = f"{PODS.path(NS)}/{BEACON}"
        while not self.stopped.wait(BEACON_EVERY_S):
            value = f"{time.monotonic():.3f}"  # what is written is what is compared
            with self.lock:  # before the write: its event may arrive before its answer
                self.written.append(float(value))
            try:  # one attempt: a failed write stays out until a later one is seen
                self.kube.call("PATCH", path, body={"metadata": {"annotations": {
                    BEACON_KEY: value}}}, content_type="application/merge-patch+json",
                    retry=NO_RETRY, timeout=5)
            except Exception:  # the apiserver is down or throttled
                continue

    def _saw_beacon(self, obj: dict[str, Any]) -> None:
        value = ((obj.get("metadata") or {}).get("annotations") or {}).get(BEACON_KEY)
        if value is None:
            return
        seen, now = float(value), time.monotonic()
        while self.written and self.written[0] <= seen:
            self.lags.append(now - self.written.popleft())

    def _add(self, pod: PodView) -> None:
        old = self.pods.get(pod.uid)
        if old is not None:
            self._remove(old)
        self.pods[pod.uid] = pod
        if pod.node and pod.active:
            self.used.setdefault(pod.node, Counter()).update(pod.requests)
        if pod.gang:
            self.gangs.setdefault(pod.gang, {})[pod.uid] = pod

    def _remove(self, pod: PodView) -> None:
        del self.pods[pod.uid]
        if pod.node and pod.active:
            counts = self.used[pod.node]
            counts.subtract(pod.requests)
            if not any(counts.values()):
                del self.used[pod.node]
        if pod.gang:
            members = self.gangs[pod.gang]
            del members[pod.uid]
            if not members:
                del self.gangs[pod.gang]

    def _replace_pods(self, items: list[Any]) -> None:
        parsed = [PodView.from_api(item, GANG_LABEL) for item in items]
        with self.lock:
            self.pods.clear()
            self.used.clear()
            self.gangs.clear()
            for pod in parsed:
                self._add(pod)
            self.changed.extend(parsed)
            beacon = next((i for i in items if i["metadata"]["name"] == BEACON), None)
            if beacon is not None:
                self._saw_beacon(beacon)

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if not meta.get("uid") or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        pod = PodView.from_api(obj, GANG_LABEL)
        with self.lock:
            if meta.get("name") == BEACON and meta.get("namespace") == NS:
                self._saw_beacon(obj)
            if kind == "DELETED":
                old = self.pods.get(pod.uid)
                if old is not None:
                    self._remove(old)
                return
            self._add(pod)
            self.changed.append(pod)

    def _replace_nodes(self, items: list[Any]) -> None:
        parsed = {item["metadata"]["name"]: NodeView.from_api(item) for item in items}
        with self.lock:
            self.nodes = parsed

    def _node_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        node = NodeView.from_api(obj) if kind != "DELETED" else None
        with self.lock:
            if node is None:
                self.nodes.pop(name, None)
            elif kind in ("ADDED", "MODIFIED"):
                self.nodes[name] = node

    def moment(self) -> Moment:
        with self.lock:
            changed, self.changed = self.changed, []
            return Moment(dict(self.nodes),
                          {name: Counter(counts) for name, counts in self.used.items()},
                          {gang: list(pods.values()) for gang, pods in self.gangs.items()},
                          changed, len(self.pods))
