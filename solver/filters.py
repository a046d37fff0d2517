"""Per-shape node filters, as kube-scheduler's default plugins apply them, vectorised.

Each node gets the number of pods of the shape that fit on it, or 0 with the *first*
reason it was excluded, in kube-scheduler's plugin order: NodeUnschedulable, NotReady,
TaintToleration, NodeAffinity (nodeSelector and required affinity), NodeResourcesFit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from solver.reasons import Exclusion, ExclusionCode
from solver.request import PodShape
from topology.quantity import BASIC_RESOURCES
from topology.records import BLOCKING_EFFECTS, NodeRecord
from topology.snapshot import IntArray, TopologySnapshot

NODE_UNSCHEDULABLE = Exclusion(ExclusionCode.NODE_UNSCHEDULABLE)
NODE_NOT_READY = Exclusion(ExclusionCode.NODE_NOT_READY)
NODE_AFFINITY = Exclusion(ExclusionCode.NODE_AFFINITY)


def insufficient(resource: str) -> Exclusion:
    return Exclusion(ExclusionCode.INSUFFICIENT, resource)


@dataclass(frozen=True, eq=False)
class ShapeFit:
    capacity: IntArray
    """capacity[node] = pods of this shape that fit there now (0 when excluded)."""
    excluded: dict[Exclusion, int]
    """reason -> number of nodes excluded for it (first failing filter)."""


def matches_node_rules(shape: PodShape, node: NodeRecord) -> bool:
    """nodeSelector and required node affinity (kube-scheduler's NodeAffinity filter):
    every selector pair, and at least one of the affinity terms when there are any."""
    labels = node.labels
    for key, value in shape.node_selector.items():
        if labels.get(key) != value:
            return False
    return not shape.affinity or any(term.matches(labels, node.name) for term in shape.affinity)


def _untolerated(shape: PodShape, node: NodeRecord) -> object | None:
    for taint in node.taints:
        if taint.effect in BLOCKING_EFFECTS and not any(
            tol.tolerates(taint) for tol in shape.tolerations
        ):
            return taint
    return None


def fit_shape(snapshot: TopologySnapshot, shape: PodShape) -> ShapeFit:
    nodes = snapshot.nodes
    count = len(nodes)
    reasons: list[Exclusion | None] = [None] * count
    needs_rules = bool(shape.node_selector or shape.affinity)
    # Most nodes are plain (schedulable, Ready, untainted): only the others, and every
    # node when the shape has selectors, need the per-node checks.
    special = np.fromiter((n.unschedulable or not n.ready or bool(n.taints) for n in nodes),
                          dtype=bool, count=count)
    rows = range(count) if needs_rules else np.flatnonzero(special).tolist()
    for i in rows:
        node = nodes[i]
        if node.unschedulable:
            reasons[i] = NODE_UNSCHEDULABLE
        elif not node.ready:
            reasons[i] = NODE_NOT_READY
        elif node.taints and (taint := _untolerated(shape, node)) is not None:
            reasons[i] = Exclusion(ExclusionCode.UNTOLERATED_TAINT, str(taint))
        elif needs_rules and not matches_node_rules(shape, node):
            reasons[i] = NODE_AFFINITY
    capacity = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    short: list[tuple[str, IntArray]] = []
    # Accelerators first: "Insufficient nvidia.com/gpu" says more than "Insufficient cpu".
    for resource in sorted(shape.requests, key=lambda r: (r in BASIC_RESOURCES, r)):
        amount = shape.requests[resource]
        if amount <= 0:
            continue
        free = snapshot.resource_column(resource)
        fits = np.zeros(count, dtype=np.int64) if free is None else np.maximum(free, 0) // amount
        short.append((resource, fits))
        capacity = np.minimum(capacity, fits)
    if not short:  # a shape that requests nothing: kube-scheduler's pod-count limit still holds
        capacity = np.zeros(count, dtype=np.int64)
    excluded: Counter[Exclusion] = Counter(r for r in reasons if r is not None)
    blocked = np.fromiter((r is not None for r in reasons), dtype=bool, count=count)
    # Nodes that pass every rule but lack room: counted under the first resource short,
    # in the same accelerators-first order.
    unexplained = (~blocked) & (capacity == 0)
    for resource, fits in short:
        lacking = unexplained & (fits == 0)
        if lacking.any():
            excluded[insufficient(resource)] += int(np.count_nonzero(lacking))
            unexplained &= ~lacking
    if unexplained.any():
        excluded[insufficient("pods")] += int(np.count_nonzero(unexplained))
    capacity[blocked] = 0
    capacity.flags.writeable = False
    return ShapeFit(capacity=capacity, excluded=dict(excluded))
