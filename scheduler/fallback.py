"""The per-pod path for CPU-only and DaemonSet pods that carry our schedulerName.

kube-scheduler's defaults, reduced to what matters here: the same filters as gangs
(resources, nodeSelector, required affinity — a DaemonSet pod's affinity names its node —
taints, unschedulable, NotReady), then NodeResourcesLeastAllocated on cpu and memory,
ties broken by node name.
"""

from __future__ import annotations

import numpy as np

from scheduler.gangs import shape_of
from solver.filters import ShapeFit, fit_shape
from topology.records import PodRecord
from topology.snapshot import TopologySnapshot


def choose_node(pod: PodRecord, snapshot: TopologySnapshot) -> tuple[str | None, ShapeFit]:
    fit = fit_shape(snapshot, shape_of(pod))
    candidates = np.flatnonzero(fit.capacity > 0)
    if len(candidates) == 0:
        return None, fit
    score = np.zeros(len(candidates))
    for resource in ("cpu", "memory"):
        free = snapshot.resource_column(resource)
        if free is None:
            continue
        total = np.array([snapshot.nodes[i].allocatable.get(resource, 0) for i in candidates],
                         dtype=np.float64)
        left = free[candidates] - pod.requests.get(resource, 0)
        score += np.where(total > 0, left / np.maximum(total, 1), 0.0)
    best = max(range(len(candidates)),
               key=lambda i: (score[i], [-ord(c) for c in snapshot.nodes[candidates[i]].name]))
    return snapshot.nodes[int(candidates[best])].name, fit
