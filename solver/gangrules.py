"""What a gang's pods ask of each other, as constraints of the aggregated model.

The per-node filters (`solver.interpod`) see only pods already placed. Among the gang's
own pods, placed together in one solve, kube-scheduler's rules become:
- required anti-affinity that selects the gang's own pods, on topology key K: at most one
  of them per K-domain (a cap of 1 per node for kubernetes.io/hostname, per domain for a
  topology level);
- host ports shared by the gang's pods: at most one per node;
- a hard topology spread constraint that counts the gang's own pods, on key K:
  `existing(d) + placed(d) <= minimum + maxSkew` in every K-domain d. Phalanx first keeps
  the minimum where it is (a cap per domain); only when that cannot hold the gang does the
  minimum rise with it (`RisingSpread`: every eligible domain then needs pods, which the
  detailed model handles);
- required affinity to the gang's own pods with no placed pod to join (the first of a
  group attracted to itself): all of them in one K-domain (a required topology level, one
  node, or one group of nodes sharing K's value).
Caps are per domain and never per pod x node, so the whole-gang model stays aggregated.
K must be kubernetes.io/hostname or a topology level (or a label that partitions the
nodes exactly as a level does); other keys among a gang's own pods are refused by name.
Preferred terms and ScheduleAnyway constraints only score in kube-scheduler: Phalanx
does not score them and says so in a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from solver.capacity import RisingSpread
from solver.filters import ShapeFit
from solver.interpod import SpreadState, counts_nothing, self_affine, shape_selected
from solver.reasons import Exclusion, ExclusionCode
from solver.request import GangRequest, PodShape
from topology.presets import HOSTNAME
from topology.snapshot import DomainTree, IntArray, TopologySnapshot

NODE = -1
"""The level of the node itself (kubernetes.io/hostname)."""
MAX_GROUPS = 64
"""Most node groups a co-location on a non-level key is solved over, one by one."""


@dataclass(frozen=True, eq=False)
class LevelCap:
    """At most `hi[d]` pods of `shapes` in each domain d of `level` (NODE: per node)."""

    level: int
    shapes: tuple[int, ...]
    hi: IntArray
    why: str
    static: bool = True
    """It holds on an empty cluster too (anti-affinity, host ports; not spread, whose
    caps depend on the pods already counted)."""


@dataclass(frozen=True, eq=False)
class GangRules:
    caps: tuple[LevelCap, ...] = ()
    rising: tuple[RisingSpread, ...] = ()
    colocate_level: int | None = None
    """A topology level whose one domain must hold the gang (self-attracting affinity)."""
    colocate_node: bool = False
    """All pods on one node (self-attracting affinity on kubernetes.io/hostname)."""
    groups: tuple[np.ndarray, ...] | None = None
    """Node groups (masks) of which one must hold the gang (affinity on another key)."""
    refusal: Exclusion | None = None
    notes: tuple[str, ...] = ()

    @property
    def shaped(self) -> bool:
        return bool(self.caps or self.rising or self.colocate_node or self.groups)


def level_of_key(tree: DomainTree, key: str) -> int | None:
    """The tree level whose domains are exactly the nodes sharing `key`'s value (NODE for
    one node each), or None. Topology levels and hostname are found by name; another key
    counts when every node carries it and it partitions the nodes as a level does."""
    if key == HOSTNAME:
        return NODE
    if key in tree.levels:
        return tree.levels.index(key)
    codes = tree.label_codes(key)
    if len(codes) == 0 or (codes < 0).any():
        return None
    distinct = len(np.unique(codes))
    if distinct == len(codes):
        return NODE
    for level in range(tree.depth):
        domains = tree.domain_of[level]
        pairs = len(np.unique(np.stack([codes, domains], axis=1), axis=0))
        if pairs == distinct == tree.domain_count(level):
            return level
    return None


def per_domain_of_codes(tree: DomainTree, level: int, codes: IntArray,
                        value: Mapping[int, int], default: int) -> IntArray:
    """A per-code quantity laid out per domain of `level` (or per node for NODE)."""
    if level == NODE:
        return np.fromiter((value.get(int(c), default) if c >= 0 else default
                            for c in codes), dtype=np.int64, count=len(codes))
    first = np.searchsorted(tree.domain_of[level], np.arange(tree.domain_count(level)))
    return np.fromiter((value.get(int(codes[n]), default) for n in first.tolist()),
                       dtype=np.int64, count=len(first))


def _level_name(tree: DomainTree, level: int) -> str:
    return HOSTNAME if level == NODE else tree.levels[level]


def gang_rules(snapshot: TopologySnapshot, request: GangRequest,
               fits: Sequence[ShapeFit]) -> GangRules:
    tree = snapshot.tree
    shapes = request.shapes
    present = {m.shape for m in request.members}
    namespaces = snapshot.namespaces
    caps: list[LevelCap] = []
    rising: list[RisingSpread] = []
    colocate: set[int] = set()
    colocate_node = False
    group_keys: set[str] = set()
    notes: list[str] = []

    def refuse(text: str) -> GangRules:
        return GangRules(refusal=Exclusion(ExclusionCode.UNSUPPORTED_GANG_RULE, text),
                         notes=tuple(notes))

    levels = ", ".join((HOSTNAME, *tree.levels))
    slices = _Slices.of(tree, request)
    for s in sorted(present):
        shape = shapes[s]
        rules = shape.rules
        if shape.preferred_node_affinity:
            notes.append("preferred node affinity is not scored by Phalanx (kube-scheduler "
                         "only scores it)")
        if rules.preferred:
            notes.append("preferred pod (anti-)affinity is not scored by Phalanx (kube-"
                         "scheduler only scores it)")
        if any(not c.hard for c in rules.spread):
            notes.append("topologySpreadConstraints with whenUnsatisfiable ScheduleAnyway "
                         "are not scored by Phalanx (kube-scheduler only scores them)")
        for term in rules.anti_affinity:
            selected = {t for t in present
                        if shape_selected(term, shape.namespace, shapes[t], namespaces)}
            if not selected:
                continue
            level = level_of_key(tree, term.topology_key)
            if slices.keep_apart(s, selected, level):
                continue  # exclusive slices already keep those pods out of its domain
            if level is None:
                return refuse(f"pod anti-affinity among the gang's own pods on topologyKey "
                              f"{term.topology_key}: honoured only on one of {levels}")
            if level == NODE:
                if s in selected:
                    caps.append(LevelCap(NODE, (s,), np.ones(len(tree.nodes), np.int64),
                                         "pod anti-affinity"))
                continue  # different templates never share a node in the model
            if selected != {s}:
                return refuse(f"pod anti-affinity between different pod templates of one "
                              f"gang on topologyKey {term.topology_key}: honoured only on "
                              f"{HOSTNAME}")
            caps.append(LevelCap(level, (s,), np.ones(tree.domain_count(level), np.int64),
                                 "pod anti-affinity"))
        if rules.host_ports and any(a.conflicts(b) for a in rules.host_ports
                                    for b in rules.host_ports):
            caps.append(LevelCap(NODE, (s,), np.ones(len(tree.nodes), np.int64), "host ports"))
        if rules.affinity and self_affine(shape, namespaces) and not _placed_match(
                snapshot, shape):
            for term in rules.affinity:
                level = level_of_key(tree, term.topology_key)
                attracted = {t for t in present
                             if shape_selected(term, shape.namespace, shapes[t], namespaces)}
                if slices.keep_together(s, attracted, level):
                    continue  # its slice already sits inside one domain of that key
                if level == NODE:
                    colocate_node = True
                elif level is None:
                    group_keys.add(term.topology_key)
                else:
                    colocate.add(level)
        for state in fits[s].spread:
            counted = {t for t in present if _spread_counts(state, shapes[t], shape.namespace)}
            if not counted:
                continue
            if counted != {s}:
                return refuse(f"a topologySpreadConstraint on {state.constraint.topology_key} "
                              f"that counts another pod template of the gang: honoured only "
                              f"within one template")
            level = level_of_key(tree, state.constraint.topology_key)
            if level is None:
                return refuse(f"a topologySpreadConstraint among the gang's own pods on "
                              f"topologyKey {state.constraint.topology_key}: honoured only on "
                              f"one of {levels}")
            caps.append(_spread_cap(tree, level, s, state))
            rising.append(_rising(tree, level, s, state))
    groups = None
    if group_keys:
        groups = _groups(snapshot, sorted(group_keys), fits)
        if groups is None:
            return refuse(f"pod affinity among the gang's own pods on topologyKey "
                          f"{', '.join(sorted(group_keys))}: more than {MAX_GROUPS} node "
                          f"groups could hold the gang")
    return GangRules(tuple(caps), tuple(rising), max(colocate) if colocate else None,
                     colocate_node, groups, None, tuple(dict.fromkeys(notes)))


@dataclass(frozen=True)
class _Slices:
    """The gang's slices as the rules among its pods see them: per shape, the sub-groups
    its members belong to, and the slice level's position (0 top ... depth the node)."""

    groups_of: Mapping[int, frozenset[str]]
    position: int | None
    exclusive: bool
    depth: int

    @staticmethod
    def of(tree: DomainTree, request: GangRequest) -> _Slices:
        if not request.subgroups:
            return _Slices({}, None, False, tree.depth)
        group_of = {pod: g.name for g in request.subgroups for pod in g.members}
        groups: dict[int, set[str]] = {}
        for member in request.members:
            groups.setdefault(member.shape, set()).add(group_of[member.pod])
        level = level_of_key(tree, request.subgroups[0].level)
        return _Slices({s: frozenset(g) for s, g in groups.items()},
                       None if level is None else _position_of(tree.depth, level),
                       request.subgroups[0].exclusive, tree.depth)

    def keep_apart(self, shape: int, selected: set[int], level: int | None) -> bool:
        """Anti-affinity from `shape` to `selected` on `level` holds by construction:
        they share no slice, slices are exclusive, and the slice level is at or above
        the term's (separate slice domains are separate domains of the term's key)."""
        if self.position is None or level is None or not self.exclusive:
            return False
        own = self.groups_of.get(shape, frozenset())
        others = frozenset().union(*(self.groups_of.get(t, frozenset()) for t in selected))
        return not (own & others) and self.position <= _position_of(self.depth, level)

    def keep_together(self, shape: int, attracted: set[int], level: int | None) -> bool:
        """Affinity of `shape` to `attracted` on `level` holds by construction: they are
        all in the one slice `shape` is in, and the term's level is at or above the
        slice level (one slice domain lies inside one domain of the term's key)."""
        if self.position is None or level is None:
            return False
        own = self.groups_of.get(shape, frozenset())
        return (len(own) == 1 and all(self.groups_of.get(t) == own for t in attracted)
                and _position_of(self.depth, level) <= self.position)


def _position_of(depth: int, level: int) -> int:
    """Depth order of a level: 0 at the top, `depth` for the node (NODE)."""
    return depth if level == NODE else level


def _placed_match(snapshot: TopologySnapshot, shape: PodShape) -> bool:
    """Some placed pod is selected by all of the shape's affinity terms."""
    terms = shape.rules.affinity
    return any(all(t.selects(shape.namespace, pod.namespace, pod.labels, snapshot.namespaces)
                   for t in terms) for _, pod in snapshot.placed)


def _spread_counts(state: SpreadState, other: PodShape, namespace: str) -> bool:
    selector = state.constraint.selector
    return (not counts_nothing(selector) and selector is not None
            and other.namespace == namespace and selector.matches(other.labels))


def _spread_cap(tree: DomainTree, level: int, shape: int, state: SpreadState) -> LevelCap:
    rooms = {code: state.room(code) for code in state.existing}
    hi = per_domain_of_codes(tree, level, state.codes, rooms, 0)
    return LevelCap(level, (shape,), hi, f"topology spread on {state.constraint.topology_key}",
                    static=False)


def _rising(tree: DomainTree, level: int, shape: int, state: SpreadState) -> RisingSpread:
    existing = per_domain_of_codes(tree, level, state.codes, state.existing, 0)
    eligible = per_domain_of_codes(tree, level, state.codes,
                                   dict.fromkeys(state.existing, 1), 0).astype(bool)
    return RisingSpread(level, shape, existing, eligible, state.constraint.max_skew,
                        state.minimum)


def _groups(snapshot: TopologySnapshot, keys: list[str], fits: Sequence[ShapeFit]
            ) -> tuple[np.ndarray, ...] | None:
    """Nodes sharing every key's value, as masks; only groups with room, roomiest first."""
    tree = snapshot.tree
    codes = np.stack([tree.label_codes(key) for key in keys], axis=1)
    room = np.sum(np.stack([fit.capacity for fit in fits]), axis=0)
    carried = (codes >= 0).all(axis=1) & (room > 0)
    if not carried.any():
        return ()
    combos, inverse = np.unique(codes[carried], axis=0, return_inverse=True)
    if len(combos) > MAX_GROUPS:
        return None
    rows = np.flatnonzero(carried)
    masks = []
    for index in range(len(combos)):
        mask = np.zeros(len(tree.nodes), dtype=bool)
        mask[rows[inverse.ravel() == index]] = True
        masks.append(mask)
    masks.sort(key=lambda m: -int(room[m].sum()))
    return tuple(masks)
