"""Prometheus metrics of one `phalanx run`, in their own registry (nothing global).

Counters and histograms are updated on the scheduling path; gauges that describe current
state (gangs by state, cache freshness, leadership) are computed when scraped, so they
can never drift from the records they describe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from scheduler.state import GangPhase, GangRecord

SOLVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BIND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The *_created series double every counter for no use to a scheduler's dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector(Collector):
    def __init__(self, gangs: Callable[[], Iterable[GangRecord]],
                 watch_ages: Callable[[], dict[str, float | None]],
                 leader: Callable[[], bool],
                 relists: Callable[[], dict[str, int]],
                 transient: Callable[[], dict[int, int]]) -> None:
        self.gangs, self.watch_ages, self.leader = gangs, watch_ages, leader
        self.relists, self.transient = relists, transient

    def collect(self) -> Iterator[Metric]:
        by_phase = Counter(g.phase for g in self.gangs())
        gangs = GaugeMetricFamily("phalanx_gangs", "Gangs Phalanx knows, by state",
                                  labels=["state"])
        for phase in GangPhase:
            gangs.add_metric([phase.value], by_phase.get(phase, 0))
        yield gangs
        age = GaugeMetricFamily(
            "phalanx_cache_sync_age_seconds",
            "Seconds since the watch of each resource last heard from the API server "
            "(list, event or bookmark); -1 while not synced", labels=["resource"])
        for resource, seconds in sorted(self.watch_ages().items()):
            age.add_metric([resource], -1.0 if seconds is None else seconds)
        yield age
        lists = CounterMetricFamily("phalanx_watch_lists",
                                    "Full lists per watched resource (1 at start; more after "
                                    "410 Gone or a long outage)", labels=["resource"])
        for resource, count in sorted(self.relists().items()):
            lists.add_metric([resource], count)
        yield lists
        transient = CounterMetricFamily(
            "phalanx_api_transient_errors", "429 and 5xx answers (by code) and lost "
            "connections (code 0) from the API server, each retried with backoff",
            labels=["code"])
        for code, count in sorted(self.transient().items()):
            transient.add_metric([str(code)], count)
        yield transient
        yield GaugeMetricFamily("phalanx_leader", "1 when this instance may bind",
                                value=1.0 if self.leader() else 0.0)


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.solve_seconds = Histogram(
            "phalanx_solve_seconds", "Solver wall time per gang attempt", ["result"],
            buckets=SOLVE_BUCKETS, registry=self.registry)
        self.bind_seconds = Histogram(
            "phalanx_bind_seconds", "Time to bind all pods of a gang (concurrent binds)",
            buckets=BIND_BUCKETS, registry=self.registry)
        self.pods_bound = PromCounter(
            "phalanx_pods_bound", "Pods bound by this instance", ["path"],
            registry=self.registry)
        self.bind_errors = PromCounter(
            "phalanx_bind_errors", "Failed pods/binding calls by HTTP status", ["code"],
            registry=self.registry)
        self.preemptions = PromCounter(
            "phalanx_preemptions", "Preemption attempts by result (Preempted, or why not)",
            ["result"], registry=self.registry)
        self.preemption_victims = Histogram(
            "phalanx_preemption_victims", "Victims (gangs + single pods) per preemption",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)

    def watch_state(self, gangs: Callable[[], Iterable[GangRecord]],
                    watch_ages: Callable[[], dict[str, float | None]],
                    leader: Callable[[], bool],
                    relists: Callable[[], dict[str, int]] = dict,
                    transient: Callable[[], dict[int, int]] = dict) -> None:
        self.registry.register(_StateCollector(gangs, watch_ages, leader, relists, transient))

    def render(self) -> bytes:
        return generate_latest(self.registry)
