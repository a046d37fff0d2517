"""A gang's pending members as a solver request: shapes, ranks, minMember, constraints.

Pods sharing a template share a shape, so the solver works per shape, never per pod. A
shape holds what decides where a pod may go: requests, node selector and affinity,
tolerations, its inter-pod rules, the node rules its volumes imply, and the labels other
pods' selectors look at (only those: index labels that differ per pod would otherwise
split every StatefulSet into one shape per pod). Members come in rank order (the
source's rank, else natural order of names); a member without a rank takes its position.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from scheduler.discovery import UNRANKED
from scheduler.gang import ConstraintKind, Gang, Planned
from scheduler.sources.base import Slicing, slicing_of
from solver.errors import BadRequest
from solver.reasons import Exclusion, ExclusionCode
from solver.request import GangRequest, Member, NodeRule, PodShape, SubGroup
from topology.podrules import NO_VOLUMES
from topology.records import PodRecord

VolumeRules = Callable[[PodRecord], tuple[tuple[NodeRule, ...], tuple[Exclusion, ...]]]
"""What a pod's volumes ask of nodes (node rules) or why it cannot be placed at all."""


def no_volume_rules(pod: PodRecord) -> tuple[tuple[NodeRule, ...], tuple[Exclusion, ...]]:
    return (), ()


def refusals_of(pod: PodRecord) -> tuple[Exclusion, ...]:
    """Whole-pod reasons that need no other object: DRA claims, in-tree disks."""
    out = []
    if pod.volumes.resource_claims:
        out.append(Exclusion(ExclusionCode.RESOURCE_CLAIMS,
                             ", ".join(pod.volumes.resource_claims)))
    if pod.volumes.in_tree:
        out.append(Exclusion(ExclusionCode.IN_TREE_VOLUME, ", ".join(pod.volumes.in_tree)))
    return tuple(out)


def shape_of(pod: PodRecord, label_keys: Collection[str] = (),
             volumes: VolumeRules = no_volume_rules) -> PodShape:
    """`label_keys`: the labels any selector in play may look at (the gang's own rules'
    and the placed pods' anti-affinity); the pod's own rules' keys are added here."""
    keys = set(label_keys) | pod.inter_pod.selector_keys()
    labels = {k: v for k, v in pod.labels.items() if k in keys}
    node_rules, volume_refusals = volumes(pod)
    return PodShape(requests=dict(pod.requests), node_selector=dict(pod.node_selector),
                    affinity=pod.affinity, tolerations=pod.tolerations, name=pod.name,
                    namespace=pod.namespace, labels=labels, rules=pod.inter_pod,
                    node_rules=node_rules, refusals=refusals_of(pod) + volume_refusals,
                    preferred_node_affinity=pod.preferred_node_affinity)


def _shape_key(shape: PodShape) -> tuple[Any, ...]:
    return (tuple(sorted(shape.requests.items())), tuple(sorted(shape.node_selector.items())),
            shape.affinity, shape.tolerations, shape.namespace,
            tuple(sorted(shape.labels.items())), shape.rules, shape.node_rules,
            shape.refusals, shape.preferred_node_affinity)


PLANNED = "#planned-"
"""Marks a planned member's name in a request: `<gang name>#planned-<rank>`."""


def planned_members(gang: Gang) -> dict[str, Planned]:
    """The gang's planned members by the name they take in its request."""
    return {f"{gang.key.name}{PLANNED}{p.rank if p.rank is not None else position}": p
            for position, p in enumerate(gang.spec.later, start=len(gang.pending))}


def request_for(gang: Gang, label_keys: Collection[str] = (),
                volumes: VolumeRules = no_volume_rules, *, planned: bool = True) -> GangRequest:
    """Every pending member, and (with `planned`) the members its controller will create
    later; the solver must place at least as many as the gang still needs (minMember
    less those already bound), and all of them when some are planned or the gang has
    slices. Sub-groups the source defines become the request's slices."""
    later_by_name = planned_members(gang) if planned else {}
    later = list(later_by_name.values())
    pods = [*gang.pending, *(p.pod for p in later)]
    keys = set(label_keys)
    for pod in pods:
        keys |= pod.inter_pod.selector_keys()
    shapes: list[PodShape] = []
    index: dict[tuple[Any, ...], int] = {}
    members = []
    ranks = [*gang.ranks, *(p.rank for p in later)]
    groups = [*gang.subgroup_of, *(p.subgroup for p in later)]
    names = [*(p.name for p in gang.pending), *later_by_name]
    # Pods of one template share their parsed parts (the same dict and tuple objects):
    # those pods get their shape from the first, by identity, without building it again
    # (a 90,000-pod StatefulSet). Pods with volumes ask the volume rules each time.
    same_as: dict[tuple[Any, ...], int] = {}
    wanted: dict[int, frozenset[str]] = {}
    for position, (pod, rank, name) in enumerate(zip(pods, ranks, names, strict=True)):
        seen = None
        if pod.volumes is NO_VOLUMES:
            looked = wanted.get(id(pod.inter_pod))
            if looked is None:
                looked = wanted[id(pod.inter_pod)] = frozenset(
                    keys | pod.inter_pod.selector_keys())
            seen = (id(pod.requests), id(pod.node_selector), id(pod.affinity),
                    id(pod.tolerations), id(pod.inter_pod), pod.namespace,
                    pod.preferred_node_affinity,
                    tuple(sorted((k, v) for k, v in pod.labels.items() if k in looked)))
            found = same_as.get(seen)
            if found is not None:
                members.append(Member(name, position if rank is None else rank, found))
                continue
        shape = shape_of(pod, keys, volumes)
        key = _shape_key(shape)
        if key not in index:
            index[key] = len(shapes)
            shapes.append(shape)
        if seen is not None:
            same_as[seen] = index[key]
        members.append(Member(name, position if rank is None else rank, index[key]))
    slicing = slicing_of(gang.spec)
    if slicing is not None:  # blocks of consecutive ranks
        groups = [f"slice-{member.rank // slicing.size}" for member in members]
    subgroups = _subgroups(gang, names, groups, slicing)
    whole = bool(later) or bool(subgroups)
    return GangRequest(str(gang.key), tuple(shapes), tuple(members),
                       len(members) if whole else min(gang.needed, len(members)),
                       gang.spec.level(ConstraintKind.REQUIRED),
                       gang.spec.level(ConstraintKind.PREFERRED), subgroups,
                       slice_balance=slicing is not None and slicing.even)


def _subgroups(gang: Gang, names: list[str], groups: list[str | None],
               slicing: Slicing | None) -> tuple[SubGroup, ...]:
    """The slices among the members: the source's sub-groups, or rank blocks of the
    annotations' slice size."""
    if slicing is not None:
        blocks: dict[str, list[str]] = {}
        for name, group in zip(names, groups, strict=True):
            blocks.setdefault(group or "", []).append(name)
        return tuple(SubGroup(group, slicing.level, tuple(pods))
                     for group, pods in sorted(blocks.items(),
                                               key=lambda kv: int(kv[0].split("-")[1])))
    specs = gang.spec.subgroups
    if not specs:
        return ()
    members: dict[str, list[str]] = {}
    for name, group in zip(names, groups, strict=True):
        members.setdefault(group or "", []).append(name)
    out = []
    for group, pods in members.items():
        spec = specs.get(group)
        if spec is None:
            raise BadRequest(f"pod {pods[0]}", f"a member of one of the gang's "
                             f"{len(specs)} sub-groups", group or "none")
        out.append(SubGroup(group, spec.level, tuple(pods), spec.exclusive))
    return tuple(out)


def peer_groups(gang: Gang) -> dict[str, list[str]]:
    """Sub-group -> nodes of its bound members (rank blocks under annotation slices)."""
    slicing = slicing_of(gang.spec)
    out: dict[str, list[str]] = {}
    for (rank, node), group in zip(gang.peers, gang.peer_groups, strict=True):
        if slicing is not None:
            group = f"slice-{rank // slicing.size}" if rank < UNRANKED else None
        if group is not None:
            out.setdefault(group, []).append(node)
    return out
