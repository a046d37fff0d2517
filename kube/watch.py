"""List + watch of one resource, raw JSON, forever: the cache's only way to learn state.

Protocol (as client-go's reflector): list with pagination, hand the full set to
`on_replace`, then watch from the list's resourceVersion with bookmarks, handing each
event to `on_event`. A watch that ends normally resumes from the last resourceVersion
seen; `410 Gone` (expired version) triggers a fresh list; a lost connection backs off
exponentially with jitter, then resumes. `synced` is set after the first full list and
cleared while a re-list is needed, which is what /readyz reports.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import urllib3

from gcpause import gc_paused, heap_line, trim_heap
from kube.client import KubeClient, RetryPolicy
from kube.errors import ApiError

log = logging.getLogger(__name__)

Raw = dict[str, Any]
WATCH_TIMEOUT_S = 240
LIST_PAGE = 1000


_DECODING = threading.Lock()
"""Held while a list page is decoded and converted (see Watcher._list). Decoding holds
the GIL anyway, so serialising it costs no throughput."""


class Gone(Exception):
    """The resourceVersion we watch from has been compacted away: re-list."""


class WireFormat(Protocol):
    """How a watched resource's bytes become objects. The default reads plain dicts;
    pods and nodes bring decoders that keep only what the cache reads
    (topology.records.PodWire, NodeWire): decoding is most of what a list costs, and
    its garbage is what a re-list leaves the heap fragmented with."""

    def page(self, data: bytes) -> tuple[list[Any], str, str]:
        """(items, resourceVersion, continue token) of one list page."""
        ...

    def event(self, line: bytes) -> tuple[str, Any]:
        """(type, object) of one watch event line."""
        ...

    def version(self, obj: Any) -> str:
        """An event object's metadata.resourceVersion ("" if none)."""
        ...

    def error(self, obj: Any) -> tuple[int, str, str]:
        """(code, reason, message) of an ERROR event's Status."""
        ...


class JsonWire:
    """Plain dicts, as the API server sends them (orjson)."""

    def page(self, data: bytes) -> tuple[list[Any], str, str]:
        page = orjson.loads(data)
        meta = page.get("metadata") or {}
        return (page.get("items") or [], str(meta.get("resourceVersion") or ""),
                str(meta.get("continue") or ""))

    def event(self, line: bytes) -> tuple[str, Any]:
        event = orjson.loads(line)
        return str(event.get("type")), event.get("object") or {}

    def version(self, obj: Any) -> str:
        return str((obj.get("metadata") or {}).get("resourceVersion") or "")

    def error(self, obj: Any) -> tuple[int, str, str]:
        return int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message"))


JSON_WIRE = JsonWire()


class Watcher:
    def __init__(self, kube: KubeClient, path: str, *, name: str,
                 on_replace: Callable[[list[Any]], None],
                 on_event: Callable[[str, Raw], None],
                 query: dict[str, str] | None = None,
                 convert: Callable[[list[Any]], list[Any]] | None = None,
                 wire: WireFormat = JSON_WIRE,
                 timeout_s: int = WATCH_TIMEOUT_S) -> None:
        self.kube, self.path, self.name = kube, path, name
        self.on_replace, self.on_event = on_replace, on_event
        self.convert = convert or (lambda items: items)
        self.wire = wire
        self.timeout_s = timeout_s
        self.query = dict(query or {})
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.version = ""
        self.relists = 0
        self.failing = False
        """The last list or watch attempt failed: the cache is not being kept current."""
        self.last_heard = 0.0
        """time.monotonic() of the last list page, event or bookmark from the server."""
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _list(self) -> None:
        # resourceVersion=0: served from the apiserver's watch cache, as informers list;
        # the watch that follows catches up from the returned version. Each page is
        # decoded and converted (to records) as it arrives, so raw JSON never piles up.
        converted: list[Any] = []
        version = ""
        query = {**self.query, "resourceVersion": "0", "limit": str(LIST_PAGE)}
        while True:
            # The GC runs while a page is fetched: the pause is process-wide, and a
            # request retried through an API server outage can wait for tens of seconds
            # while every thread's cyclic garbage piles up (a suspect, not a proven cause,
            # of the soak's 150-MiB RSS step at a restart that took 32 s to recover).
            reply = self.kube.request("GET", self.path, query=query, timeout=300)
            assert not isinstance(reply, urllib3.BaseHTTPResponse)
            # ... and is paused while it is decoded: a GC pass in the middle would rescan
            # every record already kept (measured: 30 -> 14 us per node at 100k nodes).
            # One page is decoded at a time in the process: after an API server restart
            # every watch re-lists at once, and pages decoded side by side (the GIL
            # switching between them) interleave their garbage with the records kept,
            # so the heap stays fragmented at the sum of all their high-water marks.
            with _DECODING, gc_paused():
                items, page_version, token = self.wire.page(reply.data)
                del reply
                converted.extend(self.convert(items))
                del items
            version = page_version or version
            if not token:
                break
            # As client-go's pager: a continued list names no resourceVersion (the
            # token carries it).
            query = {**self.query, "limit": str(LIST_PAGE), "continue": token}
        self.on_replace(converted)
        del converted
        if self.relists:
            trim_heap()  # the old cache and the decoded pages are garbage now
            log.info("watch %s: re-listed; heap %s", self.name, heap_line())
        self.version = version
        self.last_heard = time.monotonic()
        self.relists += 1
        self.failing = False
        self.synced.set()

    def _watch_once(self) -> None:
        query = {**self.query, "watch": "1", "allowWatchBookmarks": "true",
                 "resourceVersion": self.version, "timeoutSeconds": str(self.timeout_s)}
        try:
            response = self.kube.stream(self.path, query=query, timeout=self.timeout_s + 30,
                                        retry=RetryPolicy(attempts=1))
        except ApiError as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        self.failing = False  # connected again
        try:
            for line in response:
                if self.stopped.is_set() or not self.handle_line(line):
                    return
        finally:
            response.release_conn()

    def handle_line(self, line: bytes) -> bool:
        """One line of the watch stream: decoded by the wire format and handed to
        `on_event` (bookmarks only move the version). False: stop watching and re-list
        (a handler failed). Raises Gone or ApiError for an ERROR event."""
        if not line.strip():
            return True
        kind, obj = self.wire.event(line)
        self.last_heard = time.monotonic()
        if kind == "ERROR":
            code, reason, message = self.wire.error(obj)
            if code == 410:
                raise Gone()
            raise ApiError("WATCH", self.path, code, reason, message)
        if kind != "BOOKMARK":
            try:
                self.on_event(kind, obj)
            except Exception:
                # Resuming from this version would replay the same event forever:
                # start over from a fresh list instead.
                log.exception("watch %s: handling a %s event failed; re-listing",
                              self.name, kind)
                self.synced.clear()
                return False
        version = self.wire.version(obj)
        if version:
            self.version = version
        return True

    def _run(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            try:
                if not self.synced.is_set():
                    self._list()
                self._watch_once()
                failures = 0
            except Gone:
                log.info("watch %s: resourceVersion %s expired, re-listing", self.name,
                         self.version)
                self.synced.clear()
            except Exception as exc:  # a watch must outlive any single failure
                if not self.failing:
                    failures = 0  # it had connected since the last failure: start over
                failures += 1
                self.failing = True
                delay = min(30.0, 0.2 * 2 ** min(failures, 8)) * random.uniform(0.5, 1.0)
                log.warning("watch %s failed (%s); retrying in %.1fs", self.name, exc, delay)
                # Resume from the last version, as client-go's reflector does: the server
                # answers 410 if it can no longer serve it, and only then do we re-list.
                self.stopped.wait(delay)
