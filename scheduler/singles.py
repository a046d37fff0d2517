"""The per-pod path for CPU-only and DaemonSet pods that carry our schedulerName.

kube-scheduler's defaults, reduced to what matters here: the same filters as gangs
(resources, nodeSelector, required affinity — a DaemonSet pod's affinity names its node —
taints, unschedulable, NotReady), then NodeResourcesLeastAllocated on cpu and memory,
ties broken by node name; a pod nominated for a node by a preemption takes that node
when it fits there. Pods are chosen one after the other on one snapshot charged as
they go (each placed pod assumed at once), then bound concurrently, as kube-scheduler's
binding cycles run beside its scheduling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from scheduler.cache import ClusterCache
from scheduler.collaborators import Binder
from scheduler.metrics import SchedulerMetrics
from scheduler.report import Reporter
from scheduler.request import shape_of
from solver.filters import ShapeFit, fit_shape
from solver.reasons import by_count
from topology.records import PodRecord
from topology.snapshot import TopologySnapshot, charged


def choose_node(pod: PodRecord, snapshot: TopologySnapshot) -> tuple[str | None, ShapeFit]:
    fit = fit_shape(snapshot, shape_of(pod, snapshot.anti_affinity_keys), single=True)
    candidates = np.flatnonzero(fit.capacity > 0)
    if len(candidates) == 0:
        return None, fit
    nominated = snapshot.tree.index.get(pod.nominated_node, -1) if pod.nominated_node else -1
    if nominated >= 0 and fit.capacity[nominated] > 0:
        return pod.nominated_node, fit  # a preemption made room there: take it first
    score = np.zeros(len(candidates))
    for resource in ("cpu", "memory"):
        free = snapshot.resource_column(resource)
        if free is None:
            continue
        total = snapshot.tree.allocatable(resource)[candidates]
        left = free[candidates] - pod.requests.get(resource, 0)
        score += np.where(total > 0, left / np.maximum(total, 1), 0.0)
    top = candidates[score == score.max()]
    best = min(top.tolist(), key=lambda i: snapshot.nodes[i].name)
    return snapshot.nodes[best].name, fit


def unfit_message(fit: ShapeFit) -> str:
    """kube-scheduler's wording: 0/N nodes are available: <count> <reason>, ..."""
    reasons = ", ".join(f"{count} {reason}" for reason, count in by_count(fit.excluded))
    return f"0/{len(fit.capacity)} nodes are available: {reasons}"


class SinglePods:
    def __init__(self, cluster: ClusterCache, binder: Binder, reporter: Reporter,
                 metrics: SchedulerMetrics,
                 preempt: Callable[[PodRecord, TopologySnapshot], str | None] | None = None
                 ) -> None:
        self.cluster, self.binder, self.reporter, self.metrics = (cluster, binder, reporter,
                                                                  metrics)
        self.preempt = preempt
        """For a pod that fits nowhere: evict lower-priority victims (the cycle's), and
        the message to report; None when it does not preempt."""

    def schedule(self, pods: Sequence[PodRecord], snapshot: TopologySnapshot) -> None:
        chosen: list[tuple[PodRecord, str]] = []
        for pod in pods:
            node, fit = choose_node(pod, snapshot)
            if node is None:
                why = unfit_message(fit)
                doing = self.preempt(pod, snapshot) if self.preempt is not None else None
                self.reporter.pod_not_placed(pod, f"{why}; {doing}" if doing else why)
                continue
            self.cluster.assume(pod, node)
            chosen.append((pod, node))
            snapshot = charged(snapshot, snapshot.tree.index[node], pod)
        if not chosen:
            return
        results, _ = self.binder.bind_all([(pod.key, node) for pod, node in chosen])
        self.cluster.settle_binds(results)
        for (pod, node), result in zip(chosen, results, strict=True):
            if result.ok:
                self.metrics.pods_bound.labels("single").inc()
                self.reporter.pod_placed(pod, node)
                continue
            if result.unsent:
                continue
            self.metrics.bind_errors.labels(str(result.status)).inc()
            self.reporter.pod_not_placed(
                pod, f"binding to {node} failed: {result.status} {result.reason}")
