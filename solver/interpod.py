"""Per-node filters from the pods already on the nodes, as kube-scheduler applies them:
NodePorts, PodTopologySpread, InterPodAffinity. Each returns, per node, whether the
incoming pod (a shape) fails it; `solver.filters` orders them with the other filters.

The rules (kube-scheduler's interpodaffinity and podtopologyspread plugins):
- anti-affinity: a node fails when its value of a term's topology key is shared by a
  placed pod the term selects;
- affinity: a node must carry every term's key, and its value of each must be shared by
  a placed pod that every term selects; when no placed pod is selected by all terms
  and the pod matches its own terms, any node carrying the keys passes (the first of a
  group that is attracted to itself);
- existing anti-affinity: a node fails when a placed pod's anti-affinity term selects
  the incoming pod and the node shares that pod's node's value of the term's key;
- spread: nodes without the constraint's key fail; a node fails when
  `matching pods in its domain + (1 if the pod matches) - minimum over domains > maxSkew`,
  counting non-terminating pods of the pod's namespace on eligible nodes; with fewer
  eligible domains than minDomains the minimum is 0;
- host ports: a node fails when a placed pod holds a conflicting port.
Pods of the gang being placed are not "placed" yet: what they ask of each other is
`solver.gangrules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.request import PodShape
from topology.podrules import PodAffinityTerm, SpreadConstraint
from topology.records import BLOCKING_EFFECTS, NodeRecord, PodRecord
from topology.selectors import LabelSelector
from topology.snapshot import IntArray, TopologySnapshot

BoolArray = npt.NDArray[np.bool_]


def _selects(term: PodAffinityTerm, owner_ns: str, pod: PodRecord,
             namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    return term.selects(owner_ns, pod.namespace, pod.labels, namespaces)


def shape_selected(term: PodAffinityTerm, owner_ns: str, shape: PodShape,
                   namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    """Does the term (of a pod in `owner_ns`) select pods of `shape`?"""
    return term.selects(owner_ns, shape.namespace, shape.labels, namespaces)


def _codes_with(snapshot: TopologySnapshot, key: str, nodes: list[int]) -> IntArray:
    """The distinct codes of `key` on the given nodes (nodes without the label skipped)."""
    codes = snapshot.tree.label_codes(key)
    found = np.unique(codes[np.asarray(nodes, dtype=np.int64)]) if nodes else np.zeros(
        0, dtype=np.int64)
    return found[found >= 0]


def anti_affinity_fails(snapshot: TopologySnapshot, shape: PodShape) -> BoolArray:
    count = len(snapshot.nodes)
    fails = np.zeros(count, dtype=bool)
    for term in shape.rules.anti_affinity:
        hosts = [node for node, pod in snapshot.placed
                 if _selects(term, shape.namespace, pod, snapshot.namespaces)]
        codes = snapshot.tree.label_codes(term.topology_key)
        fails |= np.isin(codes, _codes_with(snapshot, term.topology_key, hosts)) & (codes >= 0)
    return fails


def affinity_fails(snapshot: TopologySnapshot, shape: PodShape) -> BoolArray:
    terms = shape.rules.affinity
    count = len(snapshot.nodes)
    if not terms:
        return np.zeros(count, dtype=bool)
    hosts = [node for node, pod in snapshot.placed
             if all(_selects(t, shape.namespace, pod, snapshot.namespaces) for t in terms)]
    has_keys = np.ones(count, dtype=bool)
    with_pods = np.ones(count, dtype=bool)
    any_counted = False
    for term in terms:
        codes = snapshot.tree.label_codes(term.topology_key)
        has_keys &= codes >= 0
        present = _codes_with(snapshot, term.topology_key, hosts)
        any_counted |= len(present) > 0
        with_pods &= np.isin(codes, present)
    if not any_counted and self_affine(shape, snapshot.namespaces):
        return ~has_keys
    return ~(has_keys & with_pods)


def self_affine(shape: PodShape, namespaces: Mapping[str, Mapping[str, str]]) -> bool:
    """The pod matches all of its own affinity terms (namespace included)."""
    terms = shape.rules.affinity
    return bool(terms) and all(shape_selected(t, shape.namespace, shape, namespaces)
                               for t in terms)


def existing_anti_affinity_fails(snapshot: TopologySnapshot, shape: PodShape) -> BoolArray:
    count = len(snapshot.nodes)
    fails = np.zeros(count, dtype=bool)
    for node, pod in snapshot.with_anti_affinity:
        for term in pod.inter_pod.anti_affinity:
            if not term.selects(pod.namespace, shape.namespace, shape.labels,
                                snapshot.namespaces):
                continue
            codes = snapshot.tree.label_codes(term.topology_key)
            code = int(codes[node])
            if code >= 0:
                fails |= codes == code
    return fails


def host_port_fails(snapshot: TopologySnapshot, shape: PodShape) -> BoolArray:
    count = len(snapshot.nodes)
    fails = np.zeros(count, dtype=bool)
    wanted = shape.rules.host_ports
    if not wanted:
        return fails
    for node, pod in snapshot.with_host_ports:
        if any(a.conflicts(b) for a in wanted for b in pod.inter_pod.host_ports):
            fails[node] = True
    return fails


def _tolerated(shape: PodShape, node: NodeRecord) -> bool:
    return all(any(t.tolerates(taint) for t in shape.tolerations)
               for taint in node.taints if taint.effect in BLOCKING_EFFECTS)


def counts_nothing(selector: LabelSelector | None) -> bool:
    """kube-scheduler counts no pods for an absent or an empty (`{}`) spread selector."""
    return selector is None or not selector.requirements


@dataclass(frozen=True, eq=False)
class SpreadState:
    """One hard spread constraint of a shape, as the cluster stands."""

    constraint: SpreadConstraint
    codes: IntArray
    """Per node, its domain code for the constraint's key (-1: no such label)."""
    existing: dict[int, int]
    """Domain code -> matching pods in it (eligible domains only, zeros included)."""
    minimum: int
    """The global minimum kube-scheduler compares with (0 below minDomains)."""
    self_match: bool
    """The shape's own pods count for the constraint."""

    def fails(self) -> BoolArray:
        """kube-scheduler's per-pod check, for one more pod of the shape."""
        extra = 1 if self.self_match else 0
        over = np.array([self.existing.get(int(code), 0) + extra - self.minimum
                         > self.constraint.max_skew for code in range(
                             int(self.codes.max(initial=-1)) + 1)], dtype=bool)
        out = np.zeros(len(self.codes), dtype=bool)
        known = self.codes >= 0
        if len(over):
            out[known] = over[self.codes[known]]
        return out

    def room(self, code: int, minimum: int | None = None) -> int:
        """Pods of the shape the domain may still take with the minimum at `minimum`."""
        base = self.minimum if minimum is None else minimum
        return max(0, base + self.constraint.max_skew - self.existing.get(code, 0))


def spread_states(snapshot: TopologySnapshot, shape: PodShape, eligible_by_rules: BoolArray
                  ) -> tuple[SpreadState, ...]:
    """`eligible_by_rules`: nodes the shape's nodeSelector/affinity admit (the default
    nodeAffinityPolicy Honor counts only their domains)."""
    constraints = [c for c in shape.rules.spread if c.hard]
    if not constraints:
        return ()
    nodes = snapshot.nodes
    has_all = np.ones(len(nodes), dtype=bool)
    for c in constraints:
        has_all &= snapshot.tree.label_codes(c.topology_key) >= 0
    out = []
    for c in constraints:
        codes = snapshot.tree.label_codes(c.topology_key)
        eligible = has_all.copy()
        if c.honor_node_affinity:
            eligible &= eligible_by_rules
        if c.honor_taints:
            eligible &= np.fromiter((_tolerated(shape, n) for n in nodes), dtype=bool,
                                    count=len(nodes))
        existing = {int(code): 0 for code in np.unique(codes[eligible]).tolist()}
        if not counts_nothing(c.selector):
            assert c.selector is not None
            for node, pod in snapshot.placed:
                if (eligible[node] and not pod.deleting and pod.namespace == shape.namespace
                        and c.selector.matches(pod.labels)):
                    existing[int(codes[node])] += 1
        minimum = min(existing.values()) if existing else 0
        if len(existing) < c.min_domains:
            minimum = 0
        self_match = c.selector is not None and c.selector.matches(shape.labels)
        out.append(SpreadState(c, codes, existing, minimum,
                               self_match and not counts_nothing(c.selector)))
    return tuple(out)


def spread_label_missing(snapshot: TopologySnapshot, shape: PodShape) -> BoolArray:
    missing = np.zeros(len(snapshot.nodes), dtype=bool)
    for c in shape.rules.spread:
        if c.hard:
            missing |= snapshot.tree.label_codes(c.topology_key) < 0
    return missing
