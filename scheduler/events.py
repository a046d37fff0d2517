"""Events and PodGroup status, written asynchronously so they never slow binding.

They are queued by the cycle after its binds and written in batches through the
client's burst connections (a write costs a tenth of the CPU it did through urllib3, and
a 1,024-pod gang has 1,024 `Scheduled` Events), each batch only once no binds are in
flight (`KubeClient.after_binds`): a gang arriving while the previous one's Events are
being written binds first.

Events are core/v1 Events as kube-scheduler writes them (`kubectl describe pod` shows
them): reason Scheduled / FailedScheduling on pods, and one per gang decision on the
PodGroup or the owning workload (what to write is `scheduler.report`'s decision).
Messages are capped at the API's 1 KiB note limit.

Repeated Events of one object with one reason and type fold into the first one, as
client-go's event correlator folds them: its `count` goes up and its message and
`lastTimestamp` follow the newest (one PATCH instead of a new Event), for SERIES_S after
it was created; the recorder remembers the last SERIES_KEPT such series.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from kube import ApiError, KubeClient
from kube.resources import EVENTS, NATIVE_POD_GROUPS, POD_GROUPS, ObjectRef

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 1024
SERIES_S = 600.0
SERIES_KEPT = 4096
BATCH = 256
"""Writes taken from a queue at once (Events written concurrently, status in order)."""
BATCH_CONCURRENCY = 16
YIELD_S = 5.0
"""The longest a batch waits for binds in flight to finish."""
Item = tuple[str, str, Any, Any, str]
"""(method, path, body, body to POST instead when the PATCHed Event is gone, patch type)."""
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
"""(method, path, body, body to POST instead if the PATCH finds no Event)."""


@dataclass
class _Series:
    name: str
    count: int
    started: float


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
        self.queue: queue.Queue[Item | None] = queue.Queue()
        # Events are independent creates: several writers. Status patches of one object
        # must land in order (scheduled=3 must not overwrite scheduled=4): one writer.
        self.status_queue: queue.Queue[Item | None] = queue.Queue()
        self.series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(self.queue,), daemon=True,
                                         name=f"events-{i}") for i in range(workers)]
        self.threads.append(threading.Thread(target=self._run, args=(self.status_queue,),
                                             daemon=True, name="status"))
        for thread in self.threads:
            thread.start()

    def event(self, ref: ObjectRef, reason: str, message: str, warning: bool = False) -> None:
        body = event_body(ref, reason, message, warning, self.component)
        key = (ref.kind, ref.namespace, ref.name, ref.uid, reason, str(warning))
        now = time.monotonic()
        with self._lock:
            series = self.series.get(key)
            if series is not None and now - series.started < SERIES_S:
                series.count += 1
                self.series.move_to_end(key)
                patch = {"count": series.count, "message": body["message"],
                         "lastTimestamp": body["lastTimestamp"]}
                body["metadata"]["name"] = series.name
                self.queue.put(("PATCH", EVENTS.path(ref.namespace, series.name), patch, body,
                                MERGE))
                return
            self.series[key] = _Series(body["metadata"]["name"], 1, now)
            while len(self.series) > SERIES_KEPT:
                self.series.popitem(last=False)
        self.queue.put(("POST", EVENTS.path(ref.namespace), body, None, ""))

    def pod_group_status(self, ref: ObjectRef, status: dict[str, Any]) -> None:
        """scheduler-plugins' PodGroup by merge patch; Kubernetes' own by strategic merge
        patch (its conditions merge by type, keeping the ones others wrote)."""
        if ref.api_version == NATIVE_POD_GROUPS.api_version:
            path, patch = NATIVE_POD_GROUPS.path(ref.namespace, ref.name, "status"), STRATEGIC
        else:
            path, patch = POD_GROUPS.path(ref.namespace, ref.name, "status"), MERGE
        self.status_queue.put(("PATCH", path, {"status": status}, None, patch))

    def _run(self, source: queue.Queue[Item | None]) -> None:
        ordered = source is self.status_queue
        while True:
            batch = [source.get()]
            while batch[-1] is not None and len(batch) < BATCH:
                try:
                    batch.append(source.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            try:
                if items:
                    self.kube.after_binds(YIELD_S)
                    self.kube.burst().run(self._write_all(items, ordered))
            except Exception:  # a writer that dies would leave flush() waiting
                log.exception("could not write %d queued writes", len(items))
            finally:
                for _ in batch:
                    source.task_done()
            if batch[-1] is None:
                return

    async def _write_all(self, items: list[Item], ordered: bool) -> None:
        if ordered:  # scheduled=3 must not overwrite scheduled=4
            for item in items:
                await self._write(item)
            return
        pending = iter(items)

        async def writer() -> None:
            for item in pending:
                await self._write(item)

        await asyncio.gather(*(writer() for _ in range(min(BATCH_CONCURRENCY, len(items)))))

    async def _write(self, item: Item) -> None:
        method, path, body, instead, patch = item
        burst = self.kube.burst()
        content = patch if method == "PATCH" else "application/json"
        try:
            try:
                await burst.retried(method, path, orjson.dumps(body), content_type=content)
            except ApiError as exc:
                if exc.status != 404 or instead is None:
                    raise
                # The folded-into Event expired (Events live an hour): start anew.
                namespace = instead["metadata"]["namespace"]
                await burst.retried("POST", EVENTS.path(namespace), orjson.dumps(instead))
        except ApiError as exc:
            log.warning("could not write %s %s: %s", method, path, exc)

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
