"""`phalanx run`'s wiring: the real collaborators around the cycle, and the loop that
drives it.

The loop wakes on every cache change (and at least once a second: a gang whose binds
failed is retried after its backoff, 1 s at first), skips cycles while the caches are
stale or another instance leads. It is also the explain API's
`ExplainSource`: the records, the metrics and the cache's view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from kube import KubeClient
from scheduler.binder import Binder, Evictor, VolumeWriter
from scheduler.cache import Change, ClusterCache
from scheduler.collaborators import Leading, SystemClock
from scheduler.config import Config
from scheduler.cycle import Scheduler
from scheduler.events import EventRecorder
from scheduler.gang import GangKey
from scheduler.informers import Informers
from scheduler.lookup import ApiLookup, CachedLookup
from scheduler.metrics import SchedulerMetrics
from scheduler.state import GangRecord
from topology.snapshot import TopologySnapshot

log = logging.getLogger("phalanx.scheduler")


class Runner:
    def __init__(self, kube: KubeClient, config: Config, leading: Leading | None = None) -> None:
        self.config = config
        self.leadership = leading or Leading()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.cache = ClusterCache(config.preset, on_change=self._changed)
        self.informers = Informers(kube, self.cache, config.scheduler_name)
        self.binder = Binder(kube, config.bind_concurrency, allowed=self.leadership.leading)
        self.events = EventRecorder(kube, config.scheduler_name)
        self.metrics = SchedulerMetrics()
        self.scheduler = Scheduler(config, self.cache, CachedLookup(self.cache, ApiLookup(kube)),
                                   self.binder, self.events, SystemClock(), self.leadership,
                                   self.metrics, volume_writer=VolumeWriter(kube),
                                   evictor=Evictor(kube, self.binder.pool))
        self.metrics.watch_state(lambda: list(self.scheduler.records.values()),
                                 self.informers.watch_ages, self.leadership.leading,
                                 self.informers.relists, lambda: dict(kube.transient))
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def _changed(self, change: Change) -> None:
        self.wake.set()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Runner:
        self.informers.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """No new bind from here; in-flight binds and queued writes finish first."""
        self.leadership.revoke()
        self.stopped.set()
        self.wake.set()
        self._thread.join(timeout=30)
        self.informers.stop()
        self.events.close()
        self.binder.close()

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            if self.stopped.is_set():
                return
            self.informers.ensure_optional()
            if not self.informers.synced() or not self.leadership.leading():
                continue
            try:
                self.scheduler.cycle()
            except Exception:  # one bad cycle must not stop the scheduler
                log.exception("scheduling cycle failed")

    # -- ExplainSource ----------------------------------------------------------------
    @property
    def gangs(self) -> Mapping[GangKey, GangRecord]:
        return self.scheduler.records

    def topology_snapshot(self) -> TopologySnapshot:
        return self.cache.snapshot()

    def pod_nodes(self, keys: Iterable[str]) -> dict[str, str]:
        return {key: self.cache.pod_node(key) for key in keys}

    def readiness(self) -> tuple[bool, bool]:
        return self.informers.synced(), self.leadership.leading()
