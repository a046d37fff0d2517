"""Events and PodGroup status, written asynchronously so they never slow binding.

Events are core/v1 Events as kube-scheduler writes them (`kubectl describe pod` shows
them): reason Scheduled / FailedScheduling on pods, and one per gang decision on the
PodGroup or the owning workload (what to write is `scheduler.report`'s decision).
Messages are capped at the API's 1 KiB note limit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

from kube import ApiError, KubeClient
from kube.resources import EVENTS, POD_GROUPS, ObjectRef

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 1024


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def event_body(ref: ObjectRef, reason: str, message: str, warning: bool,
               component: str) -> dict[str, Any]:
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    stamp = _now()
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:16]}", "namespace": ref.namespace},
        "involvedObject": {"kind": ref.kind, "namespace": ref.namespace, "name": ref.name,
                           "uid": ref.uid, "apiVersion": ref.api_version},
        "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
        "source": {"component": component}, "reportingComponent": component,
        "reportingInstance": component, "firstTimestamp": stamp, "lastTimestamp": stamp,
        "count": 1, "action": "Binding" if reason == "Scheduled" else "Scheduling",
    }


class EventRecorder:
    def __init__(self, kube: KubeClient, component: str, workers: int = 4) -> None:
        self.kube, self.component = kube, component
        self.queue: queue.Queue[tuple[str, str, Any] | None] = queue.Queue()
        # Events are independent creates: several writers. Status patches of one object
        # must land in order (scheduled=3 must not overwrite scheduled=4): one writer.
        self.status_queue: queue.Queue[tuple[str, str, Any] | None] = queue.Queue()
        self.threads = [threading.Thread(target=self._run, args=(self.queue,), daemon=True,
                                         name=f"events-{i}") for i in range(workers)]
        self.threads.append(threading.Thread(target=self._run, args=(self.status_queue,),
                                             daemon=True, name="status"))
        for thread in self.threads:
            thread.start()

    def event(self, ref: ObjectRef, reason: str, message: str, warning: bool = False) -> None:
        body = event_body(ref, reason, message, warning, self.component)
        self.queue.put(("POST", EVENTS.path(ref.namespace), body))

    def pod_group_status(self, ref: ObjectRef, status: dict[str, Any]) -> None:
        path = POD_GROUPS.path(ref.namespace, ref.name, "status")
        self.status_queue.put(("PATCH", path, {"status": status}))

    def _run(self, source: queue.Queue[tuple[str, str, Any] | None]) -> None:
        while True:
            item = source.get()
            if item is None:
                return
            method, path, body = item
            try:
                content = ("application/merge-patch+json" if method == "PATCH"
                           else "application/json")
                self.kube.request(method, path, body=body, content_type=content)
            except ApiError as exc:
                log.warning("could not write %s %s: %s", method, path, exc)
            finally:
                source.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while ((self.queue.unfinished_tasks or self.status_queue.unfinished_tasks)
               and time.monotonic() < deadline):
            time.sleep(0.02)

    def close(self) -> None:
        self.flush()
        for _ in self.threads[:-1]:
            self.queue.put(None)
        self.status_queue.put(None)
