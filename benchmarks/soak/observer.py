"""The API server's view, kept current by two watches (pods, nodes) and judged every
second: a watch is the apiserver's own account of every change, at a fraction of what
listing thousands of pods each second would cost the machine under test. After an
apiserver or etcd restart the watches re-list (kube.watch), so the view heals with it.
"""

from __future__ import annotations

import threading
from typing import Any

from kube import KubeClient, Watcher
from kube.resources import NODES, PODS


class View:
    """Pods and nodes by uid / name, replaced on re-list, updated per event."""

    def __init__(self, kube: KubeClient) -> None:
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.watchers = [
            Watcher(kube, PODS.path(), name="soak-pods",
                    on_replace=lambda items: self._replace(self.pods, items, "uid"),
                    on_event=lambda kind, obj: self._event(self.pods, kind, obj, "uid")),
            Watcher(kube, NODES.path(), name="soak-nodes",
                    on_replace=lambda items: self._replace(self.nodes, items, "name"),
                    on_event=lambda kind, obj: self._event(self.nodes, kind, obj, "name")),
        ]

    def start(self) -> View:
        for watcher in self.watchers:
            watcher.start()
        for watcher in self.watchers:
            if not watcher.synced.wait(60):
                raise TimeoutError(f"watch {watcher.name} not synced within 60 s")
        return self

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()

    @property
    def current(self) -> bool:
        return all(w.synced.is_set() and not w.failing for w in self.watchers)

    def _replace(self, store: dict[str, dict[str, Any]], items: list[Any], key: str) -> None:
        with self.lock:
            store.clear()
            store.update({item["metadata"][key]: item for item in items})

    def _event(self, store: dict[str, dict[str, Any]], kind: str, obj: dict[str, Any],
               key: str) -> None:
        ident = (obj.get("metadata") or {}).get(key)
        if not ident:
            return
        with self.lock:
            if kind == "DELETED":
                store.pop(ident, None)
            elif kind in ("ADDED", "MODIFIED"):
                store[ident] = obj

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.lock:
            return list(self.pods.values()), list(self.nodes.values())
