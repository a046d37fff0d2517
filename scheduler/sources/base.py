"""The protocol every gang source implements, and the reading rules they share.

A source knows one way pods are grouped into gangs (a PodGroup label, a controller owner,
later JobSet, LeaderWorkerSet, ...). Discovery asks the sources in precedence order which
gang a pod belongs to; the first to claim it owns it, so a pod is in exactly one gang.
Everything framework-specific stays inside the source's module (Kueue's
one-folder-per-framework integrations are the model); discovery knows only this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kube.resources import Resource
from scheduler.gang import Constraint, ConstraintKind, GangKey, GangSpec
from topology.records import PodRecord

Raw = dict[str, Any]

REQUIRED = "phalanx.dev/required-topology"
PREFERRED = "phalanx.dev/preferred-topology"
SLICE_REQUIRED = "phalanx.dev/slice-required-topology"
SLICE_SIZE = "phalanx.dev/slice-size"
SLICE_BALANCE = "phalanx.dev/slice-balance"
KUEUE_REQUIRED = "kueue.x-k8s.io/podset-required-topology"
KUEUE_PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"
KUEUE_SLICE_REQUIRED = "kueue.x-k8s.io/podset-slice-required-topology"
KUEUE_SLICE_SIZE = "kueue.x-k8s.io/podset-slice-size"
CONSTRAINT_KEYS = {ConstraintKind.REQUIRED: (REQUIRED, KUEUE_REQUIRED),
                   ConstraintKind.PREFERRED: (PREFERRED, KUEUE_PREFERRED),
                   ConstraintKind.SLICE_REQUIRED: (SLICE_REQUIRED, KUEUE_SLICE_REQUIRED),
                   ConstraintKind.SLICE_SIZE: (SLICE_SIZE, KUEUE_SLICE_SIZE),
                   ConstraintKind.SLICE_BALANCE: (SLICE_BALANCE,)}
"""Per constraint, the annotations that carry it: ours first, Kueue's as an alias."""
BALANCES = ("even",)
STS_INDEX = "apps.kubernetes.io/pod-index"
JOB_INDEX = "batch.kubernetes.io/job-completion-index"


class GangSpecError(ValueError):
    """A gang's object or a member carries a value Phalanx cannot use; names it."""

    def __init__(self, obj: str, field: str, expected: str, got: object) -> None:
        self.obj, self.field = obj, field
        super().__init__(f"{obj}: field {field}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class Slicing:
    """Slices read from annotations: blocks of `size` consecutive ranks, each inside one
    domain of `level`; `even` asks every used domain to hold as many slices (+-1)."""

    level: str
    size: int
    even: bool = False


def slicing_of(spec: GangSpec) -> Slicing | None:
    """The gang's annotation slices, or None; GangSpecError names what does not hold:
    the size and the level come together, the size is a whole number that divides the
    gang's, and a gang whose source defines its own sub-groups takes no other."""
    found = {c.kind: c for c in spec.constraints
             if c.kind in (ConstraintKind.SLICE_REQUIRED, ConstraintKind.SLICE_SIZE,
                           ConstraintKind.SLICE_BALANCE)}
    if not found:
        return None
    obj = f"{spec.ref.kind} {spec.ref.namespace}/{spec.ref.name}"
    level, size = found.get(ConstraintKind.SLICE_REQUIRED), found.get(ConstraintKind.SLICE_SIZE)
    if level is None or size is None:
        have = (level or size or found[ConstraintKind.SLICE_BALANCE]).key
        missing = SLICE_SIZE if size is None else SLICE_REQUIRED
        raise GangSpecError(obj, f"metadata.annotations[{missing}]",
                            f"set together with {have}", None)
    if not size.level.isdigit() or int(size.level) < 1:
        raise GangSpecError(obj, f"metadata.annotations[{size.key}]", "a whole number >= 1",
                            size.level)
    if spec.size % int(size.level):
        raise GangSpecError(obj, f"metadata.annotations[{size.key}]",
                            f"a divisor of the gang's size {spec.size}", size.level)
    balance = found.get(ConstraintKind.SLICE_BALANCE)
    if balance is not None and balance.level not in BALANCES:
        raise GangSpecError(obj, f"metadata.annotations[{balance.key}]",
                            " or ".join(BALANCES), balance.level)
    if spec.subgroups:
        raise GangSpecError(obj, f"metadata.annotations[{size.key}]",
                            f"no annotation slices on a {spec.ref.kind} whose sub-groups "
                            f"its own topology annotations define", size.level)
    return Slicing(level.level, int(size.level), balance is not None)


class ObjectLookup(Protocol):
    """Reads one API object: watched kinds from the cache, others from the API server
    (briefly remembered). None when it does not exist."""

    def get(self, resource: Resource, namespace: str, name: str) -> Raw | None: ...


class GangSource(Protocol):
    name: str
    """How explain names this source (e.g. "PodGroup label", "owner")."""

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        """The gang this source puts the pod in, or None when it does not group it.
        Most sources decide from the pod alone; `objects` is there for those that must
        read the workload (a JobSet's initializer steps are not in its gang)."""
        ...

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        """Whether `claim` of this pod depends on other objects than the pod (then its
        answer may change while the pod does not, and discovery asks again each cycle;
        otherwise it is remembered for as long as the pod's record is the same)."""
        ...

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        """The member's rank, or None when the source gives none; GangSpecError when
        the pod carries a malformed one."""
        ...

    def subgroup(self, pod: PodRecord) -> str | None:
        """The sub-group (slice) the member belongs to, or None."""
        ...

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        """The gang's spec from its objects; `members` are every unfinished pod it
        claimed (pending, gated and bound). Errors are returned in the spec, named."""
        ...

    def expand(self, obj: Raw) -> list[Raw] | None:
        """Offline (`phalanx place`): the pods the object's controller would create, or
        None when the object is not this source's."""
        ...


def read_constraints(layers: Sequence[tuple[str, Mapping[str, str]]]) -> tuple[Constraint, ...]:
    """The topology constraints in force and where each came from. `layers` are
    (object kind, its annotations) from the most to the least authoritative, e.g. the
    PodGroup's, then the pods'. Per constraint, our annotation beats Kueue's alias
    wherever it sits; between layers of one key, the earlier layer wins."""
    out = []
    for kind, keys in CONSTRAINT_KEYS.items():
        found = next(((key, source, annotations[key]) for key in keys
                      for source, annotations in layers if annotations.get(key)), None)
        if found is not None:
            key, source, level = found
            out.append(Constraint(kind, level, key, source))
    return tuple(out)


def index_rank(pod: PodRecord, labels: Sequence[str] = (STS_INDEX, JOB_INDEX)) -> int | None:
    """The rank a controller wrote as a pod-index label (StatefulSet, indexed Job)."""
    for label in labels:
        value = pod.labels.get(label)
        if value is not None:
            if not value.isdigit():
                raise GangSpecError(f"pod {pod.key}", f"metadata.labels[{label}]",
                                    "a non-negative integer", value)
            return int(value)
    return None


def label_int(pod: PodRecord, label: str) -> int | None:
    """An integer label a controller wrote (None when absent; named when malformed)."""
    value = pod.labels.get(label)
    if value is None:
        return None
    if not value.isdigit():
        raise GangSpecError(f"pod {pod.key}", f"metadata.labels[{label}]",
                            "a non-negative integer", value)
    return int(value)


def positive_int(obj: str, field: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GangSpecError(obj, field, "an integer >= 1", value)
    return value


def meta(raw: Raw | None) -> dict[str, Any]:
    return dict((raw or {}).get("metadata") or {})


def annotations_of(raw: Raw | None) -> dict[str, str]:
    found = meta(raw).get("annotations") or {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def requests_accelerator(pod: PodRecord, accelerators: Sequence[str]) -> bool:
    return any(pod.requests.get(resource, 0) > 0 for resource in accelerators)


def pod_from_template(template: object, obj: str, field: str, *, name: str, namespace: str,
                      labels: Mapping[str, str] = {}, annotations: Mapping[str, str] = {},
                      owner: Raw | None = None) -> Raw:
    """A pod as a controller creates it from a pod template: the template's metadata and
    spec, with the controller's own labels and annotations added (`obj` and `field` name
    the template when it is not a pod template).

    The pod's `spec` *is* the template's spec, shared and never copied: every caller only
    parses it (`pod_from_json` builds new containers for all it keeps), and a 90,000-pod
    StatefulSet expanded with a deep copy per pod spent ~40 s of `phalanx place` copying."""
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise GangSpecError(obj, field, "a pod template with a spec", template)
    template_meta = template.get("metadata") or {}
    pod_meta = {**template_meta, "name": name, "namespace": namespace,
                "labels": {**(template_meta.get("labels") or {}), **labels},
                "annotations": {**(template_meta.get("annotations") or {}), **annotations}}
    if owner is not None:
        pod_meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]}


def owner_reference(obj: Raw) -> Raw:
    """The controller ownerReference a controller puts on what it creates from `obj`."""
    metadata = meta(obj)
    return {"kind": str(obj.get("kind") or ""), "name": str(metadata.get("name") or ""),
            "controller": True, "uid": str(metadata.get("uid") or ""),
            "apiVersion": str(obj.get("apiVersion") or "")}


def name_and_namespace(obj: Raw) -> tuple[str, str]:
    """An object's name (named error when missing) and namespace (default: default)."""
    metadata = meta(obj)
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise GangSpecError(str(obj.get("kind")), "metadata.name", "a non-empty string", name)
    return name, str(metadata.get("namespace") or "default")


def not_found(kind: str, namespace: str, name: str) -> str:
    """Why a gang whose workload object is missing waits (GangSpec.waiting)."""
    return (f"{kind} {namespace}/{name} not found: being deleted (its pods go next), or not "
            f"seen yet; its pods are not placed without it")
