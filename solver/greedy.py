"""Kueue-style greedy BestFit placer, level by level.

The fast fallback when CP-SAT times out and the baseline benchmarks compare against. Per
shape (largest demand first; nodes taken by one shape are not offered to the next):
1. find the deepest level at which one domain holds all pods (the required level when one
   is set) and take the *smallest* such domain (best fit), else start at the top level;
2. at each level, within each chosen domain, take children largest-first until the last
   one, which is the smallest child that covers what remains (best fit);
3. the same rule picks nodes inside bottom domains.
"""

from __future__ import annotations

import numpy as np

from solver.capacity import alone, level_sums
from solver.instance import Instance
from solver.plan import NodePlan
from topology.snapshot import DomainTree, IntArray


def pick(ids: IntArray, caps: IntArray, need: int) -> list[tuple[int, int]] | None:
    """Chooses among sibling candidates (ids in tree order) and splits `need` over them."""
    order = sorted(range(len(ids)), key=lambda i: (-int(caps[i]), i))
    chosen: list[tuple[int, int]] = []
    used: set[int] = set()
    remaining = need
    for i in order:
        if remaining <= 0:
            break
        if caps[i] <= 0:
            break
        if caps[i] >= remaining:
            # Best fit for the last piece: the smallest unused candidate that covers it.
            best = min((j for j in order if j not in used and caps[j] >= remaining),
                       key=lambda j: (int(caps[j]), j))
            chosen.append((int(ids[best]), remaining))
            remaining = 0
            break
        chosen.append((int(ids[i]), int(caps[i])))
        used.add(i)
        remaining -= int(caps[i])
    return chosen if remaining == 0 else None


def _descend(tree: DomainTree, sums: list[IntArray], node_caps: IntArray, level: int,
             domain: int, need: int, out: dict[int, int]) -> bool:
    bottom = level == tree.depth - 1
    span = tree.members(level, domain) if bottom else tree.children(level, domain)
    ids = np.arange(span.start, span.stop, dtype=np.int64)
    caps = node_caps[ids] if bottom else sums[level + 1][ids]
    keep = caps > 0
    picked = pick(ids[keep], caps[keep], need)
    if picked is None:
        return False
    for child, amount in picked:
        if bottom:
            out[child] = amount
        elif not _descend(tree, sums, node_caps, level + 1, child, amount, out):
            return False
    return True


def _place_shape(instance: Instance, node_caps: IntArray, need: int,
                 shape: int) -> dict[int, int] | None:
    tree = instance.snapshot.tree
    # Clipped by the shape's domain caps, so every child chosen can hold its share.
    sums = level_sums(tree, node_caps, instance.caps_of(shape))
    single = alone(tree, sums)
    deepest = instance.required
    if deepest is None:
        fitting = [level for level in range(tree.depth) if (single[level] >= need).any()]
        deepest = fitting[-1] if fitting else None
    out: dict[int, int] = {}
    if deepest is not None:
        whole = np.flatnonzero(single[deepest] >= need)
        if len(whole) == 0:
            return None
        best = int(whole[np.argmin(single[deepest][whole])])
        return out if _descend(tree, sums, node_caps, deepest, best, need, out) else None
    tops = np.flatnonzero(sums[0] > 0)
    picked = pick(tops, sums[0][tops], need)
    if picked is None:
        return None
    for domain, amount in picked:
        if not _descend(tree, sums, node_caps, 0, domain, amount, out):
            return None
    return out


def greedy_plan(instance: Instance) -> NodePlan | None:
    taken = np.zeros(len(instance.snapshot.nodes), dtype=bool)
    per_shape: list[dict[int, int]] = [{} for _ in instance.demand]
    for shape in sorted(range(instance.shapes), key=lambda s: (-instance.demand[s], s)):
        caps = np.where(taken, 0, np.minimum(instance.capacity[:, shape],
                                             instance.demand[shape]))
        placed = _place_shape(instance, caps, instance.demand[shape], shape)
        if placed is None:
            return None
        per_shape[shape] = placed
        taken[list(placed)] = True
    return NodePlan(tuple(per_shape))
