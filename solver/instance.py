"""Preprocessing: a gang request on a snapshot becomes pure numbers the placers work on.

Everything the model needs is computed here once, with numpy: per node and shape how many
pods fit, per domain and shape the (demand-clipped) capacity, the candidate domains, the
per-level lower bounds. Placers never look at labels or resources again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from solver.capacity import LevelCaps, RisingSpread, SliceRule, alone, level_sums
from solver.filters import ShapeFit
from topology.presets import HOSTNAME
from topology.snapshot import IntArray, TopologySnapshot

NODE_LEVEL = HOSTNAME


@dataclass(frozen=True, eq=False)
class Instance:
    snapshot: TopologySnapshot
    demand: tuple[int, ...]
    """demand[shape] = pods of that shape to place."""
    capacity: IntArray
    """capacity[node, shape] = pods of that shape that fit on the node (0 outside scope)."""
    domain_capacity: tuple[IntArray, ...]
    """domain_capacity[level][domain, shape], each entry clipped to the shape's demand."""
    domain_free: tuple[IntArray, ...]
    """The same, unclipped: what best fit compares (a 32-node rack is looser than a
    4-node one even when the gang needs only 4)."""
    required: int | None
    """Index of the level whose single domain must hold the whole gang, if any."""
    caps: tuple[LevelCaps, ...] = ()
    """Per shape, the per-domain caps by level (node caps are already in `capacity`);
    `domain_capacity` honours them, the models add them where they sum below a level."""

    rising: tuple[RisingSpread, ...] = ()
    """Spread constraints whose minimum may rise (detailed model only)."""
    slices: SliceRule | None = None
    """Uniform slices (single-shape gangs; the folded model honours them)."""

    def caps_of(self, shape: int) -> LevelCaps:
        return self.caps[shape] if self.caps else {}

    @property
    def shapes(self) -> int:
        return len(self.demand)

    @property
    def total(self) -> int:
        return sum(self.demand)

    def candidates(self, level: int) -> IntArray:
        """Domains of `level` that can hold at least one pod of some shape, in tree order."""
        return np.flatnonzero(self.domain_capacity[level].sum(axis=1) > 0)


def build_instance(
    snapshot: TopologySnapshot, demand: tuple[int, ...], fits: tuple[ShapeFit, ...],
    required: int | None, caps: tuple[LevelCaps, ...] = (),
    rising: tuple[RisingSpread, ...] = (), slices: SliceRule | None = None,
) -> Instance:
    """`fits` already carry the node caps; `caps` are the per-shape level caps (with the
    slice level's whole-slice cap when `slices`)."""
    capacity = np.stack([fit.capacity for fit in fits], axis=1)
    return instance_of(snapshot, demand, capacity, required, caps, rising, slices)


def instance_of(
    snapshot: TopologySnapshot, demand: tuple[int, ...], capacity: IntArray,
    required: int | None, caps: tuple[LevelCaps, ...] = (),
    rising: tuple[RisingSpread, ...] = (), slices: SliceRule | None = None,
) -> Instance:
    """The instance for per-node capacities `capacity[node, shape]` (a copy is kept)."""
    capacity = np.array(capacity, dtype=np.int64)
    clip = np.asarray(demand, dtype=np.int64)
    tree = snapshot.tree
    shape_caps = caps or tuple({} for _ in demand)

    def sums_of(cap: IntArray) -> list[list[IntArray]]:
        return [level_sums(tree, cap[:, s], shape_caps[s]) for s in range(len(demand))]

    if required is not None:
        # Only domains of the required level that hold every shape's demand stay in scope.
        at = np.stack([alone(tree, per_shape)[required] for per_shape in sums_of(capacity)],
                      axis=1)
        whole = np.all(at >= clip, axis=1)
        capacity = capacity * whole[tree.domain_of[required]][:, None]
    per_shape = sums_of(capacity)
    free = tuple(np.stack([per_shape[s][level] for s in range(len(demand))], axis=1)
                 for level in range(tree.depth))
    capacity.flags.writeable = False
    return Instance(snapshot, demand, capacity, tuple(np.minimum(f, clip) for f in free), free,
                    required, tuple(shape_caps) if caps else (), rising, slices)


def cover_count(capacities: IntArray, need: int) -> int | None:
    """Fewest items whose capacities sum to `need`, taking the largest first (None: never)."""
    if need <= 0:
        return 0
    ordered = np.sort(capacities[capacities > 0])[::-1]
    reached = np.searchsorted(np.cumsum(ordered), need)
    return int(reached) + 1 if reached < len(ordered) else None


def lower_bounds(instance: Instance) -> dict[str, int | None]:
    """Per level (and per node), the fewest domains that could hold the gang if every
    other level were ignored: valid bounds for the lexicographic optimum."""
    tree = instance.snapshot.tree
    bounds: dict[str, int | None] = {}
    for level, key in enumerate(tree.levels):
        counts = [cover_count(instance.domain_capacity[level][:, s], need)
                  for s, need in enumerate(instance.demand)]
        bounds[key] = None if None in counts else max(c for c in counts if c is not None)
    node_counts = [cover_count(np.minimum(instance.capacity[:, s], need), need)
                   for s, need in enumerate(instance.demand)]
    bounds[NODE_LEVEL] = None if None in node_counts else max(
        c for c in node_counts if c is not None)
    return bounds
