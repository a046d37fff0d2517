"""A gang's pending members as a solver request: shapes, ranks, minMember, constraints.

Pods sharing a template share a shape, so the solver works per shape, never per pod.
Members come in rank order (the source's rank, else natural order of names); a member
without a rank takes its position in that order.
"""

from __future__ import annotations

from typing import Any

from scheduler.gang import ConstraintKind, Gang
from solver.request import GangRequest, Member, PodShape
from topology.records import PodRecord


def shape_of(pod: PodRecord) -> PodShape:
    return PodShape(requests=dict(pod.requests), node_selector=dict(pod.node_selector),
                    affinity=pod.affinity, tolerations=pod.tolerations, name=pod.name)


def request_for(gang: Gang) -> GangRequest:
    """Every pending member; the solver must place at least as many as the gang still
    needs (minMember less those already bound)."""
    shapes: list[PodShape] = []
    index: dict[tuple[Any, ...], int] = {}
    members = []
    for position, (pod, rank) in enumerate(zip(gang.pending, gang.ranks, strict=True)):
        shape = shape_of(pod)
        key = (tuple(sorted(shape.requests.items())), tuple(sorted(shape.node_selector.items())),
               shape.affinity, shape.tolerations)
        if key not in index:
            index[key] = len(shapes)
            shapes.append(shape)
        members.append(Member(pod.name, position if rank is None else rank, index[key]))
    return GangRequest(str(gang.key), tuple(shapes), tuple(members),
                       min(gang.needed, len(members)),
                       gang.spec.level(ConstraintKind.REQUIRED),
                       gang.spec.level(ConstraintKind.PREFERRED))
