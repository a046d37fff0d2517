"""When each pod appeared and when it was bound, as seen through one watch (one clock)."""

from __future__ import annotations

import threading
import time
from typing import Any

from kube import KubeClient, Watcher
from kube.resources import PODS


class PodTimes:
    """Per pod uid: monotonic time first seen (ADDED), and (time, node) first seen bound."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}
        self.bound: dict[str, tuple[float, str]] = {}
        self.names: dict[str, str] = {}
        self.lock = threading.Lock()

    def replace(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.event("ADDED", item)

    def event(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        uid = meta["uid"]
        with self.lock:
            self.added.setdefault(uid, now)
            self.names[uid] = f"{meta.get('namespace')}/{meta['name']}"
            node = (obj.get("spec") or {}).get("nodeName")
            if node and uid not in self.bound:
                self.bound[uid] = (now, node)


def watch_pods(kube: KubeClient, namespace: str | None = None) -> tuple[PodTimes, Watcher]:
    times = PodTimes()
    watcher = Watcher(kube, PODS.path(namespace), name="bench-pods",
                      on_replace=times.replace, on_event=times.event).start()
    watcher.synced.wait(30)
    return times, watcher
