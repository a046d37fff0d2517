"""From a NodePlan to per-pod assignments in rank order, and the placement's metrics.

Rank order (docs/design.md, "Ranks"): nodes are visited in tree order (bottom domains in
depth-first order, nodes by name inside), and consecutive ranks fill a node, then the next
node of the same bottom domain, before moving on. In a tree metric that is a ring order
with the fewest link crossings for the chosen nodes: every subtree is entered once.
"""

from __future__ import annotations

import numpy as np

from solver.instance import NODE_LEVEL
from solver.plan import NodePlan
from solver.request import Member
from solver.result import Assignment, Metrics
from topology.snapshot import DomainTree, IntArray, render_path


def assign(tree: DomainTree, plan: NodePlan, members: tuple[Member, ...]) -> tuple[Assignment, ...]:
    """`members` are in rank order; each shape's members take that shape's slots (nodes in
    tree order, each repeated for its pods); extra members get none (the caller placed a
    minMember prefix). Numpy per slot list, not Python per pod: a 90,000-pod gang."""
    per_shape: list[list[tuple[str, str]]] = []
    paths: dict[int, str] = {}  # per bottom domain: 90,000 pods share ~3,500 paths
    for placed in plan.per_shape:
        nodes = sorted(placed)
        counts = np.fromiter((placed[n] for n in nodes), dtype=np.int64, count=len(nodes))
        slots = np.repeat(np.asarray(nodes, dtype=np.int64), counts)
        domains = (tree.domain_of[-1][slots] if tree.levels
                   else np.full(len(slots), -1, dtype=np.int64)).tolist()
        for domain, node in zip(domains, slots.tolist(), strict=True):
            if domain not in paths:
                paths[domain] = render_path(tree.node_path(node))
        per_shape.append([(tree.nodes[n].name, paths[d])
                          for n, d in zip(slots.tolist(), domains, strict=True)])
    if len(per_shape) == 1:  # tuples made in C: 90,000 NamedTuple calls cost 0.2 s
        taken = per_shape[0]
        return tuple(map(Assignment._make,
                         zip([m.pod for m in members[:len(taken)]],
                             [m.rank for m in members[:len(taken)]],
                             [name for name, _ in taken], [path for _, path in taken],
                             strict=False)))
    cursor = [0] * len(per_shape)
    out = []
    for member in members:
        position = cursor[member.shape]
        if position >= len(per_shape[member.shape]):
            continue
        name, path = per_shape[member.shape][position]
        cursor[member.shape] += 1
        out.append(Assignment(member.pod, member.rank, name, path))
    return tuple(out)


def chosen_domains(tree: DomainTree, nodes: list[int]) -> dict[str, tuple[str, ...]]:
    chosen: dict[str, tuple[str, ...]] = {}
    at = np.asarray(nodes, dtype=np.int64)
    for level, key in enumerate(tree.levels):
        ids = np.unique(tree.domain_of[level][at]).tolist()
        chosen[key] = tuple(render_path(tree.paths[level][d]) for d in ids)
    return chosen


def measure(tree: DomainTree, assignments: tuple[Assignment, ...],
            lower_bound: dict[str, int | None]) -> Metrics:
    ordered = sorted(assignments, key=lambda a: (a.rank, a.pod))
    nodes = np.fromiter((tree.index[a.node] for a in ordered), dtype=np.int64,
                        count=len(ordered))
    used = {key: len(np.unique(tree.domain_of[level][nodes]))
            for level, key in enumerate(tree.levels)}
    used[NODE_LEVEL] = len(np.unique(nodes))
    return Metrics(used, dict(lower_bound), ring_hops(tree, nodes), _max_distance(tree, used))


def ring_hops(tree: DomainTree, nodes: IntArray) -> int:
    """Sum of `tree.distance` between each rank and the next, the last back to the
    first: numpy over the levels instead of one Python call per pair."""
    if len(nodes) <= 1:
        return 0
    following = np.roll(nodes, -1)
    shared = np.zeros(len(nodes), dtype=np.int64)
    still = np.ones(len(nodes), dtype=bool)
    for level in range(tree.depth):
        column = tree.domain_of[level]
        still &= column[nodes] == column[following]
        shared += still
    hops = tree.depth + 1 - shared
    hops[nodes == following] = 0
    return int(hops.sum())


def _max_distance(tree: DomainTree, used: dict[str, int]) -> int:
    """The largest pairwise distance, from the highest level the gang spans >1 domain."""
    for level, key in enumerate(tree.levels):
        if used[key] > 1:
            return tree.depth + 1 - level
    return 1 if used[NODE_LEVEL] > 1 else 0
