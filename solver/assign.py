"""From a NodePlan to per-pod assignments in rank order, and the placement's metrics.

Rank order (docs/design.md, "Ranks"): nodes are visited in tree order (bottom domains in
depth-first order, nodes by name inside), and consecutive ranks fill a node, then the next
node of the same bottom domain, before moving on. In a tree metric that is a ring order
with the fewest link crossings for the chosen nodes: every subtree is entered once.
"""

from __future__ import annotations

from solver.instance import NODE_LEVEL
from solver.plan import NodePlan
from solver.request import Member
from solver.result import Assignment, Metrics
from topology.snapshot import DomainTree, render_path


def assign(tree: DomainTree, plan: NodePlan, members: tuple[Member, ...]) -> tuple[Assignment, ...]:
    """`members` are in rank order; each shape's members take that shape's slots."""
    slots: list[list[int]] = []
    for placed in plan.per_shape:
        shape_slots: list[int] = []
        for node in sorted(placed):
            shape_slots.extend([node] * placed[node])
        slots.append(shape_slots)
    cursor = [0] * len(slots)
    out = []
    for member in members:
        position = cursor[member.shape]
        if position >= len(slots[member.shape]):
            continue  # fewer slots than members: the caller placed a minMember prefix
        node = slots[member.shape][position]
        cursor[member.shape] += 1
        out.append(Assignment(member.pod, member.rank, tree.nodes[node].name,
                              render_path(tree.node_path(node))))
    return tuple(out)


def chosen_domains(tree: DomainTree, nodes: list[int]) -> dict[str, tuple[str, ...]]:
    chosen: dict[str, tuple[str, ...]] = {}
    for level, key in enumerate(tree.levels):
        ids = sorted({int(tree.domain_of[level][node]) for node in nodes})
        chosen[key] = tuple(render_path(tree.paths[level][d]) for d in ids)
    return chosen


def measure(tree: DomainTree, assignments: tuple[Assignment, ...],
            lower_bound: dict[str, int | None]) -> Metrics:
    nodes = [tree.index[a.node] for a in sorted(assignments, key=lambda a: (a.rank, a.pod))]
    used = {key: len({int(tree.domain_of[level][n]) for n in nodes})
            for level, key in enumerate(tree.levels)}
    used[NODE_LEVEL] = len(set(nodes))
    ring = sum(tree.distance(nodes[i], nodes[(i + 1) % len(nodes)])
               for i in range(len(nodes))) if len(nodes) > 1 else 0
    return Metrics(used, dict(lower_bound), ring, _max_distance(tree, used))


def _max_distance(tree: DomainTree, used: dict[str, int]) -> int:
    """The largest pairwise distance, from the highest level the gang spans >1 domain."""
    for level, key in enumerate(tree.levels):
        if used[key] > 1:
            return tree.depth + 1 - level
    return 1 if used[NODE_LEVEL] > 1 else 0
