"""The per-pod path for CPU-only and DaemonSet pods that carry our schedulerName.

kube-scheduler's defaults, reduced to what matters here: the same filters as gangs
(resources, nodeSelector, required affinity — a DaemonSet pod's affinity names its node —
taints, unschedulable, NotReady), then NodeResourcesLeastAllocated on cpu and memory,
ties broken by node name.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from scheduler.gangs import shape_of
from solver.filters import ShapeFit, fit_shape
from topology.records import PodRecord
from topology.snapshot import DomainTree, TopologySnapshot


@functools.lru_cache(maxsize=4)
def _allocatable(tree: DomainTree, resource: str) -> npt.NDArray[np.float64]:
    """Per node allocatable of one resource; the tree is shared by every cycle until nodes
    change, so this is computed once per tree."""
    return np.fromiter((node.allocatable.get(resource, 0) for node in tree.nodes),
                       dtype=np.float64, count=len(tree.nodes))


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
        total = _allocatable(snapshot.tree, resource)[candidates]
        left = free[candidates] - pod.requests.get(resource, 0)
        score += np.where(total > 0, left / np.maximum(total, 1), 0.0)
    top = candidates[score == score.max()]
    best = min(top.tolist(), key=lambda i: snapshot.nodes[i].name)
    return snapshot.nodes[best].name, fit
