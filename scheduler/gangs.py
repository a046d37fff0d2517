"""Gang requests from Kubernetes objects: a StatefulSet, an (indexed) Job, or a PodGroup
with its pods (DESIGN §3). Pure functions over raw JSON; shared by `phalanx place` and the
scheduler's gang discovery. Bad input raises GangSpecError naming the field."""

from __future__ import annotations

import re
from typing import Any

from solver.request import GangRequest, Member, PodShape
from topology.records import PodRecord, RecordError, pod_from_json

POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
REQUIRED = "phalanx.dev/required-topology"
PREFERRED = "phalanx.dev/preferred-topology"
KUEUE_REQUIRED = "kueue.x-k8s.io/podset-required-topology"
KUEUE_PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"
STS_INDEX = "apps.kubernetes.io/pod-index"
JOB_INDEX = "batch.kubernetes.io/job-completion-index"


class GangSpecError(ValueError):
    def __init__(self, obj: str, field: str, expected: str, got: object) -> None:
        self.obj, self.field = obj, field
        super().__init__(f"{obj}: field {field}: expected {expected}, got {got!r}")


def topology_constraints(annotations: dict[str, str]) -> tuple[str | None, str | None, str]:
    """(required level, preferred level, where they were read): our keys win over Kueue's."""
    required = annotations.get(REQUIRED) or annotations.get(KUEUE_REQUIRED)
    preferred = annotations.get(PREFERRED) or annotations.get(KUEUE_PREFERRED)
    source = ""
    if required or preferred:
        ours = REQUIRED in annotations or PREFERRED in annotations
        source = "annotation" if ours else "kueue-alias"
    return required, preferred, source


def shape_of(pod: PodRecord) -> PodShape:
    return PodShape(requests=dict(pod.requests), node_selector=dict(pod.node_selector),
                    affinity=pod.affinity, tolerations=pod.tolerations, name=pod.name)


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def rank_of(pod: PodRecord) -> int | None:
    for label in (STS_INDEX, JOB_INDEX):
        value = pod.labels.get(label)
        if value is not None:
            if not value.isdigit():
                raise GangSpecError(f"pod {pod.key}", f"metadata.labels[{label}]",
                                    "a non-negative integer", value)
            return int(value)
    return None


def _template_shape(obj: str, template: Any) -> tuple[PodShape, dict[str, str]]:
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise GangSpecError(obj, "spec.template", "a pod template with a spec", template)
    fake = {"metadata": {"name": "template", "namespace": "default",
                         **(template.get("metadata") or {})},
            "spec": template["spec"]}
    try:
        record = pod_from_json(fake)
    except RecordError as exc:
        raise GangSpecError(obj, f"spec.template ({exc.field_name})", "a valid pod spec",
                            str(exc)) from None
    return shape_of(record), dict(record.annotations)


def gang_from_workload(raw: dict[str, Any]) -> GangRequest:
    """A StatefulSet (replicas pods, ranks 0..n-1) or a Job (parallelism pods)."""
    kind = raw.get("kind")
    meta = raw.get("metadata") or {}
    name = meta.get("name")
    namespace = meta.get("namespace") or "default"
    obj = f"{kind} {namespace}/{name}"
    if not isinstance(name, str) or not name:
        raise GangSpecError(str(kind), "metadata.name", "a non-empty string", name)
    spec = raw.get("spec") or {}
    field = "spec.replicas" if kind == "StatefulSet" else "spec.parallelism"
    count = spec.get("replicas" if kind == "StatefulSet" else "parallelism", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise GangSpecError(obj, field, "an integer >= 1", count)
    shape, annotations = _template_shape(obj, spec.get("template"))
    for key, value in shape.requests.items():
        if value < 0:
            raise GangSpecError(obj, f"spec.template requests.{key}", ">= 0", value)
    required, preferred, _ = topology_constraints(
        {**(meta.get("annotations") or {}), **annotations})
    members = tuple(Member(f"{name}-{i}", i, 0) for i in range(count))
    return GangRequest(f"{namespace}/{name}", (shape,), members, count, required, preferred)


def gang_from_pods(name: str, pods: list[PodRecord], min_member: int,
                   annotations: dict[str, str]) -> GangRequest:
    """The pending members of a gang, in rank order (pod-index labels, else natural
    order of names); pods sharing a template share a shape."""
    ordered = sorted(pods, key=lambda p: (rank_of(p) if rank_of(p) is not None else 1 << 30,
                                          _natural_key(p.name)))
    shapes: list[PodShape] = []
    index: dict[tuple[Any, ...], int] = {}
    members = []
    for position, pod in enumerate(ordered):
        shape = shape_of(pod)
        key = (tuple(sorted(shape.requests.items())), tuple(sorted(shape.node_selector.items())),
               shape.affinity, shape.tolerations)
        if key not in index:
            index[key] = len(shapes)
            shapes.append(shape)
        rank = rank_of(pod)
        members.append(Member(pod.name, position if rank is None else rank, index[key]))
    required, preferred, _ = topology_constraints(
        {**(ordered[0].annotations if ordered else {}), **annotations})
    return GangRequest(name, tuple(shapes), tuple(members), min_member, required, preferred)


def pod_group_min_member(raw: dict[str, Any]) -> int:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    min_member = spec.get("minMember", 1)
    if not isinstance(min_member, int) or isinstance(min_member, bool) or min_member < 1:
        raise GangSpecError(f"PodGroup {meta.get('namespace')}/{meta.get('name')}",
                            "spec.minMember", "an integer >= 1", min_member)
    return min_member


def gang_from_pod_group(raw: dict[str, Any], pods: list[PodRecord]) -> GangRequest:
    """A PodGroup and the pods that carry its label; bound pods are already placed."""
    meta = raw.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    obj = f"PodGroup {namespace}/{name}"
    if not isinstance(name, str) or not name:
        raise GangSpecError("PodGroup", "metadata.name", "a non-empty string", name)
    min_member = pod_group_min_member(raw)
    pending = [p for p in pods if p.namespace == namespace
               and p.labels.get(POD_GROUP_LABEL) == name and not p.node_name and not p.terminal]
    if not pending:
        raise GangSpecError(obj, "pods", f"pending pods labelled {POD_GROUP_LABEL}={name}", 0)
    if min_member > len(pending):
        raise GangSpecError(obj, "spec.minMember",
                            f"at most the {len(pending)} pending pods of the group", min_member)
    return gang_from_pods(f"{namespace}/{name}", pending, min_member,
                          dict(meta.get("annotations") or {}))
