"""Per-shape node filters, as kube-scheduler's default plugins apply them, vectorised.

Each node gets the number of pods of the shape that fit on it, or 0 with the *first*
reason it was excluded, in kube-scheduler's plugin order (see `fit_shape`); the filters
that look at the pods already placed are in `solver.interpod`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver import interpod
from solver.reasons import Exclusion, ExclusionCode
from solver.request import PodShape
from topology.quantity import BASIC_RESOURCES
from topology.records import BLOCKING_EFFECTS, NodeRecord
from topology.selectors import any_term
from topology.snapshot import IntArray, TopologySnapshot

NODE_UNSCHEDULABLE = Exclusion(ExclusionCode.NODE_UNSCHEDULABLE)
NODE_NOT_READY = Exclusion(ExclusionCode.NODE_NOT_READY)
NODE_AFFINITY = Exclusion(ExclusionCode.NODE_AFFINITY)
NODE_PORTS = Exclusion(ExclusionCode.NODE_PORTS)
SPREAD_LABEL = Exclusion(ExclusionCode.SPREAD_LABEL)
SPREAD = Exclusion(ExclusionCode.SPREAD)
POD_AFFINITY = Exclusion(ExclusionCode.POD_AFFINITY)
POD_ANTI_AFFINITY = Exclusion(ExclusionCode.POD_ANTI_AFFINITY)
EXISTING_ANTI_AFFINITY = Exclusion(ExclusionCode.EXISTING_ANTI_AFFINITY)


def insufficient(resource: str) -> Exclusion:
    return Exclusion(ExclusionCode.INSUFFICIENT, resource)


@dataclass(frozen=True, eq=False)
class ShapeFit:
    capacity: IntArray
    """capacity[node] = pods of this shape that fit there now (0 when excluded)."""
    excluded: dict[Exclusion, int]
    """reason -> number of nodes excluded for it (first failing filter)."""
    refusals: tuple[Exclusion, ...] = ()
    """Whole-pod reasons that exclude every node (the shape's own refusals)."""
    spread: tuple[interpod.SpreadState, ...] = ()
    """The shape's hard spread constraints as the cluster stands (for the gang's caps)."""


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


def fit_shape(snapshot: TopologySnapshot, shape: PodShape, single: bool = False) -> ShapeFit:
    """Per node, how many pods of the shape fit, and the first filter each excluded node
    failed, in kube-scheduler's order: NodeUnschedulable, NotReady, TaintToleration,
    NodeAffinity, NodePorts, NodeResourcesFit, the volume rules, PodTopologySpread,
    InterPodAffinity (affinity, anti-affinity, existing pods' anti-affinity).
    `single`: the pod is placed alone (the per-pod path). A gang's pods that count for
    their own spread constraint are checked by the gang's caps instead, since the
    minimum may rise as they are placed together (`solver.gangrules`)."""
    nodes = snapshot.nodes
    count = len(nodes)
    if shape.refusals:
        return ShapeFit(np.zeros(count, dtype=np.int64), {}, shape.refusals)
    reasons: list[Exclusion | None] = [None] * count
    needs_rules = bool(shape.node_selector or shape.affinity)
    # Most nodes are plain (schedulable, Ready, untainted): only the others, and every
    # node when the shape has selectors, need the per-node checks.
    special = np.fromiter((n.unschedulable or not n.ready or bool(n.taints) for n in nodes),
                          dtype=bool, count=count)
    rows = range(count) if needs_rules else np.flatnonzero(special).tolist()
    node_rules_ok = np.ones(count, dtype=bool)
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
            node_rules_ok[i] = False
    blocked = np.fromiter((r is not None for r in reasons), dtype=bool, count=count)
    excluded: Counter[Exclusion] = Counter(r for r in reasons if r is not None)
    rules = shape.rules
    if rules.host_ports:
        _exclude(excluded, blocked, interpod.host_port_fails(snapshot, shape), NODE_PORTS)
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
    # Nodes that pass every rule so far but lack room: counted under the first resource
    # short, in the same accelerators-first order.
    for resource, fits in short:
        _exclude(excluded, blocked, fits == 0, insufficient(resource))
    _exclude(excluded, blocked, capacity == 0, insufficient("pods"))
    for rule in shape.node_rules:
        if rule.terms is not None:
            admits = np.fromiter((any_term(rule.terms, n.labels, n.name) for n in nodes),
                                 dtype=bool, count=count)
            _exclude(excluded, blocked, ~admits, rule.reason)
        if rule.limits is not None:
            limits = dict(rule.limits)
            default = (1 << 40) if rule.unlisted is None else rule.unlisted
            limit = np.fromiter((limits.get(n.name, default) for n in nodes), dtype=np.int64,
                                count=count)
            _exclude(excluded, blocked, limit <= 0, rule.reason)
            capacity = np.minimum(capacity, limit)
    spread: tuple[interpod.SpreadState, ...] = ()
    if rules.spread:
        _exclude(excluded, blocked, interpod.spread_label_missing(snapshot, shape),
                 SPREAD_LABEL)
        spread = interpod.spread_states(snapshot, shape, node_rules_ok)
        for state in spread:
            if single or not state.self_match:
                _exclude(excluded, blocked, state.fails(), SPREAD)
    if rules.affinity:
        _exclude(excluded, blocked, interpod.affinity_fails(snapshot, shape), POD_AFFINITY)
    if rules.anti_affinity:
        _exclude(excluded, blocked, interpod.anti_affinity_fails(snapshot, shape),
                 POD_ANTI_AFFINITY)
    if snapshot.with_anti_affinity:
        _exclude(excluded, blocked, interpod.existing_anti_affinity_fails(snapshot, shape),
                 EXISTING_ANTI_AFFINITY)
    capacity[blocked] = 0
    capacity.flags.writeable = False
    return ShapeFit(capacity=capacity, excluded=dict(excluded), spread=spread)


def _exclude(excluded: Counter[Exclusion], blocked: npt.NDArray[np.bool_],
             fails: npt.NDArray[np.bool_], reason: Exclusion) -> None:
    """Nodes not excluded yet that fail this filter are excluded for its reason."""
    newly = fails & ~blocked
    if newly.any():
        excluded[reason] += int(np.count_nonzero(newly))
        blocked |= newly
