"""The domain tree and the immutable topology snapshot a scheduling cycle works on.

Nodes are kept in *tree order* (sorted by domain path, then name), and every level maps
each node to a dense domain index, so per-domain sums are one `np.bincount` and the
distance between two nodes is a comparison of a few integers.

A node missing a level's label becomes its own `<unlabelled:NAME>` domain from that level
down: usable, but it shares no domain below its last labelled level with anyone, so it is
never mistaken for a neighbour (docs/design.md, "Topology").
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gcpause import gc_paused
from topology.presets import Preset, effective_levels
from topology.records import NodeRecord, PodRecord

IntArray = npt.NDArray[np.int64]


def unlabelled_component(node: str) -> str:
    return f"<unlabelled:{node}>"


@dataclass(frozen=True, eq=False)
class DomainTree:
    """The static part: which node sits in which domain. Rebuilt only when nodes are added,
    removed or relabelled; every cycle's snapshot shares it read-only."""

    levels: tuple[str, ...]
    nodes: tuple[NodeRecord, ...]
    paths: tuple[tuple[tuple[str, ...], ...], ...]
    """paths[level][domain index] = the domain's path of values from the top."""
    domain_of: tuple[IntArray, ...]
    """domain_of[level][node index] = index of the node's domain at that level."""
    parent_of: tuple[IntArray, ...]
    """parent_of[level][domain index] = index of its parent at level-1 (0 at the top)."""
    index: Mapping[str, int]
    unlabelled: tuple[str, ...]
    """Names of nodes that lack at least one level's label."""
    _columns: dict[tuple[str, str], IntArray] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    """Per-node columns computed from the nodes (allocatable per resource, label codes per
    key), kept on the tree so they live exactly as long as it: a module-level cache keyed
    by tree kept up to 64 stale trees alive after the nodes changed (252 MiB at 100,000
    nodes after 20 node changes)."""

    @property
    def depth(self) -> int:
        return len(self.levels)

    def domain_count(self, level: int) -> int:
        return len(self.paths[level])

    def node_path(self, node: int) -> tuple[str, ...]:
        return self.paths[-1][int(self.domain_of[-1][node])] if self.levels else ()

    def distance(self, a: int, b: int) -> int:
        """Levels climbed from the two nodes to their lowest common domain:
        0 same node, 1 same bottom domain, ..., depth+1 different top domains."""
        if a == b:
            return 0
        shared = 0
        for level in range(self.depth):
            if self.domain_of[level][a] != self.domain_of[level][b]:
                break
            shared += 1
        return self.depth + 1 - shared

    def children(self, level: int, domain: int) -> range:
        """Indices at level+1 of a domain's children (contiguous: the tree is sorted)."""
        parents = self.parent_of[level + 1]
        return range(int(np.searchsorted(parents, domain, side="left")),
                     int(np.searchsorted(parents, domain, side="right")))

    def members(self, level: int, domain: int) -> range:
        """Indices of the nodes inside a domain (contiguous: the tree is sorted)."""
        column = self.domain_of[level]
        return range(int(np.searchsorted(column, domain, side="left")),
                     int(np.searchsorted(column, domain, side="right")))

    def label_codes(self, key: str) -> IntArray:
        """Per node (tree order), a code for its value of label `key`: nodes with the
        same value share a code, nodes without the label get -1. The domains of an
        arbitrary topology key (a pod affinity term's, a spread constraint's)."""
        return self._column("label", key, _label_codes)

    def allocatable(self, resource: str) -> IntArray:
        """Per node (tree order), its allocatable amount of one resource: computed once
        per tree, which every cycle shares until the nodes change."""
        return self._column("allocatable", resource, _allocatable)

    def _column(self, what: str, name: str,
                compute: Callable[[DomainTree, str], IntArray]) -> IntArray:
        # Two threads may compute the same column at once: both results are equal and
        # read-only, so whichever lands last is as good (no lock on the hot path).
        column = self._columns.get((what, name))
        if column is None:
            column = self._columns[(what, name)] = compute(self, name)
        return column

    def per_domain(self, level: int, per_node: IntArray) -> IntArray:
        """Sums a per-node quantity into the domains of one level."""
        sums = np.bincount(self.domain_of[level], weights=per_node,
                           minlength=self.domain_count(level))
        return sums.astype(np.int64)


Placed = tuple[int, PodRecord]
"""(node index, pod)."""


@dataclass(frozen=True, eq=False)
class Occupants:
    """The pods on the nodes, and those of them with required anti-affinity or host
    ports (every incoming pod is checked against these few). One pod more is cheap: the
    shared base is not copied (the per-pod path charges pods one by one)."""

    base: tuple[Placed, ...] = ()
    added: tuple[Placed, ...] = ()
    with_anti_affinity: tuple[Placed, ...] = ()
    with_host_ports: tuple[Placed, ...] = ()
    removed: frozenset[tuple[str, str]] = frozenset()
    """(namespace, name) of base or added pods that are gone (a preemption's victims)."""

    @staticmethod
    def of(entries: Iterable[Placed]) -> Occupants:
        base = tuple(entries)
        return Occupants(base, (), tuple(e for e in base if e[1].inter_pod.anti_affinity),
                         tuple(e for e in base if e[1].inter_pod.host_ports))

    def plus(self, entry: Placed) -> Occupants:
        rules = entry[1].inter_pod
        return Occupants(self.base, (*self.added, entry),
                         self.with_anti_affinity + ((entry,) if rules.anti_affinity else ()),
                         self.with_host_ports + ((entry,) if rules.host_ports else ()),
                         self.removed - {(entry[1].namespace, entry[1].name)})

    def minus(self, gone: frozenset[tuple[str, str]]) -> Occupants:
        """Without the pods named (namespace, name): the few with rules are filtered at
        once, the rest as they are iterated (no pass over every pod here)."""
        def keep(entries: tuple[Placed, ...]) -> tuple[Placed, ...]:
            return tuple(e for e in entries if (e[1].namespace, e[1].name) not in gone)
        return Occupants(self.base, self.added, keep(self.with_anti_affinity),
                         keep(self.with_host_ports), self.removed | gone)

    def __iter__(self) -> Iterator[Placed]:
        if not self.removed:
            yield from self.base
            yield from self.added
            return
        removed = self.removed
        for entry in itertools.chain(self.base, self.added):
            if (entry[1].namespace, entry[1].name) not in removed:
                yield entry

    def __len__(self) -> int:
        return len(self.base) + len(self.added) - (
            sum(1 for e in itertools.chain(self.base, self.added)
                if (e[1].namespace, e[1].name) in self.removed) if self.removed else 0)


@dataclass(frozen=True, eq=False)
class TopologySnapshot:
    """What one scheduling cycle sees: the shared tree, free capacity per node, and the
    pods already on the nodes (bound or assumed), whose labels, ports and anti-affinity
    the incoming pods' rules are checked against."""

    tree: DomainTree
    resources: tuple[str, ...]
    free: IntArray
    """free[node index, resource index] = allocatable minus what bound pods request."""
    placed: Occupants = field(default_factory=Occupants)
    """(node index, pod) of every pod on a node of the tree, bound or assumed."""
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Namespace -> its labels (for namespaceSelector in pod affinity terms)."""

    @property
    def with_anti_affinity(self) -> tuple[Placed, ...]:
        """Placed pods with required anti-affinity: every incoming pod is checked
        against them (the symmetric half of anti-affinity)."""
        return self.placed.with_anti_affinity

    @functools.cached_property
    def anti_affinity_keys(self) -> frozenset[str]:
        """Label keys the placed pods' anti-affinity selectors look at: an incoming
        pod's labels under these keys decide whether those pods repel it."""
        keys: set[str] = set()
        for _, pod in self.with_anti_affinity:
            for term in pod.inter_pod.anti_affinity:
                if term.selector is not None:
                    keys |= term.selector.keys()
        return frozenset(keys)

    @property
    def with_host_ports(self) -> tuple[Placed, ...]:
        return self.placed.with_host_ports

    @property
    def levels(self) -> tuple[str, ...]:
        return self.tree.levels

    @property
    def nodes(self) -> tuple[NodeRecord, ...]:
        return self.tree.nodes

    def resource_column(self, resource: str) -> IntArray | None:
        try:
            return self.free[:, self.resources.index(resource)]
        except ValueError:
            return None


def charged(snapshot: TopologySnapshot, node: int, pod: PodRecord) -> TopologySnapshot:
    """The same snapshot with one more pod on one node: its requests taken from the
    node's free capacity, and itself among the placed pods (the tree is shared; only the
    free matrix is copied)."""
    free = snapshot.free.copy()
    for name, amount in pod.requests.items():
        if name in snapshot.resources:
            free[node, snapshot.resources.index(name)] -= amount
    free.flags.writeable = False
    return TopologySnapshot(tree=snapshot.tree, resources=snapshot.resources, free=free,
                            placed=snapshot.placed.plus((node, pod)),
                            namespaces=snapshot.namespaces)


def placed_pods(pods: Iterable[PodRecord]) -> list[tuple[str, PodRecord]]:
    """(node, pod) of every bound, unfinished pod: what inter-pod rules look at."""
    return [(pod.node_name, pod) for pod in pods if pod.consumes_capacity]


def usage_from_pods(pods: Iterable[PodRecord]) -> dict[str, dict[str, int]]:
    """What every bound, unfinished pod takes from its node, whichever scheduler bound it."""
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        if pod.consumes_capacity:
            slot = used.setdefault(pod.node_name, {})
            for name, amount in pod.requests.items():
                slot[name] = slot.get(name, 0) + amount
    return used


def _factorize(values: list[str | None]) -> tuple[list[str], IntArray]:
    """Sorted distinct values and each value's rank among them; None ranks -1. A dict
    lookup per item: far cheaper than sorting 100k Python strings with numpy."""
    distinct = sorted({v for v in values if v is not None})
    rank: dict[str | None, int] = {value: i for i, value in enumerate(distinct)}
    rank[None] = -1
    return distinct, np.array([rank[v] for v in values], dtype=np.int64)


def _component(distinct: list[str], code: int, node: str) -> str:
    return distinct[code] if code < len(distinct) else unlabelled_component(node)


def build_tree(nodes: Iterable[NodeRecord], preset: Preset) -> DomainTree:
    """Vectorised: label values are factorised per level, nodes are ordered by one
    lexsort on (level codes..., name), and a domain starts wherever a node's codes first
    differ from the previous node's at or above that level. A node missing a level's
    label gets a code of its own from that level down (its `<unlabelled:NAME>` domain)."""
    records = list(nodes)
    levels = effective_levels(preset, [node.labels for node in records])
    depth = len(levels)
    count = len(records)
    with gc_paused():
        labels = [node.labels for node in records]
        _, name_codes = _factorize([node.name for node in records])
        distinct_codes: list[tuple[list[str], IntArray]] = []
        for spec in levels:
            raw: list[str | None] = [node_labels.get(spec.key) or None for node_labels in labels]
            for key in spec.fallbacks:
                for i in [i for i, v in enumerate(raw) if v is None]:
                    raw[i] = labels[i].get(key) or None
            distinct_codes.append(_factorize(raw))
    missing = np.zeros(count, dtype=bool)
    codes = []
    for distinct, code in distinct_codes:
        missing |= code < 0
        # Unique per node, after every labelled value: never shared, never confused.
        codes.append(np.where(missing, len(distinct) + name_codes, code))
    order = np.lexsort((name_codes, *reversed(codes))) if records else np.zeros(0, np.int64)
    sorted_codes = [code[order] for code in codes]
    changed = np.zeros(len(order), dtype=bool)
    if len(order):
        changed[0] = True
    domain_of: list[IntArray] = []
    paths: list[tuple[tuple[str, ...], ...]] = []
    parent_of: list[IntArray] = []
    for level in range(depth):
        column = sorted_codes[level]
        changed = changed | np.concatenate(([len(order) > 0], column[1:] != column[:-1]))
        ids = np.cumsum(changed) - 1
        starts = np.flatnonzero(changed)
        domain_of.append(ids.astype(np.int64))
        paths.append(tuple(
            tuple(_component(distinct_codes[lvl][0], int(sorted_codes[lvl][start]),
                             records[int(order[start])].name) for lvl in range(level + 1))
            for start in starts.tolist()
        ))
        parent_of.append(domain_of[level - 1][starts] if level else
                         np.zeros(len(starts), dtype=np.int64))
    ordered = tuple(records[i] for i in order.tolist())
    for array in domain_of:
        array.flags.writeable = False
    return DomainTree(
        levels=tuple(level.key for level in levels),
        nodes=ordered,
        paths=tuple(paths),
        domain_of=tuple(domain_of),
        parent_of=tuple(parent_of),
        index={node.name: i for i, node in enumerate(ordered)},
        unlabelled=tuple(sorted(records[i].name for i in np.flatnonzero(missing).tolist())),
    )


def without(snapshot: TopologySnapshot, pods: Iterable[PodRecord]) -> TopologySnapshot:
    """The same snapshot with `pods` (records among its placed pods) gone from their
    nodes: their requests given back and themselves no longer among the placed pods, so
    their labels, ports and anti-affinity stop counting (what a preemption's victims
    leave). Costs the victims, not the placed pods."""
    free = snapshot.free.copy()
    index = snapshot.tree.index
    pods = list(pods)
    gone = frozenset((pod.namespace, pod.name) for pod in pods)
    rows = np.fromiter((index.get(pod.node_name, -1) for pod in pods), dtype=np.int64,
                       count=len(pods))
    on_tree = rows >= 0
    for col, name in enumerate(snapshot.resources):
        amounts = np.fromiter((pod.requests.get(name, 0) for pod in pods), dtype=np.int64,
                              count=len(pods))
        np.add.at(free[:, col], rows[on_tree], amounts[on_tree])
    free.flags.writeable = False
    return TopologySnapshot(tree=snapshot.tree, resources=snapshot.resources, free=free,
                            placed=snapshot.placed.minus(gone),
                            namespaces=snapshot.namespaces)


def snapshot_of(tree: DomainTree, used: Mapping[str, Mapping[str, int]],
                placed: Iterable[tuple[str, PodRecord]] = (),
                namespaces: Mapping[str, Mapping[str, str]] | None = None) -> TopologySnapshot:
    """Free capacity on top of a (shared) tree: allocatable minus bound pods' requests;
    `placed` are (node name, pod) of the pods on nodes, kept for inter-pod rules."""
    ordered = tree.nodes
    with gc_paused():
        names = sorted({name for node in ordered for name in node.allocatable}
                       | {name for usage in used.values() for name in usage})
        free = np.zeros((len(ordered), len(names)), dtype=np.int64)
        for col, name in enumerate(names):
            free[:, col] = [node.allocatable.get(name, 0) for node in ordered]
        column = {name: i for i, name in enumerate(names)}
        for node_name, usage in used.items():
            row = tree.index.get(node_name)
            if row is not None:
                for name, amount in usage.items():
                    free[row, column[name]] -= amount
    free.flags.writeable = False
    index = tree.index
    on_nodes = Occupants.of((index[node], pod) for node, pod in placed if node in index)
    return TopologySnapshot(tree=tree, resources=tuple(names), free=free, placed=on_nodes,
                            namespaces=namespaces or {})


def build_snapshot(
    nodes: Iterable[NodeRecord], used: Mapping[str, Mapping[str, int]], preset: Preset,
    placed: Iterable[tuple[str, PodRecord]] = (),
) -> TopologySnapshot:
    return snapshot_of(build_tree(nodes, preset), used, placed)


def render_path(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _allocatable(tree: DomainTree, resource: str) -> IntArray:
    column = np.fromiter((node.allocatable.get(resource, 0) for node in tree.nodes),
                         dtype=np.int64, count=len(tree.nodes))
    column.flags.writeable = False
    return column


def _label_codes(tree: DomainTree, key: str) -> IntArray:
    _, codes = _factorize([node.labels.get(key) for node in tree.nodes])
    codes.flags.writeable = False
    return codes
