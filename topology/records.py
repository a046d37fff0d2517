"""Compact, frozen records parsed straight from raw Node and Pod JSON.

Shared by the scheduler's cache (watch events) and `phalanx place` (kubectl -o json files).
Parsing never goes through the generated client models, which are ~100x slower. A record
keeps only what placement needs; malformed fields raise RecordError naming the object and
the field, so one bad object is reported instead of poisoning a whole list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from topology.errors import RecordError
from topology.podrules import NO_RULES, NO_VOLUMES, InterPod, Volumes, inter_pod, volumes
from topology.quantity import to_units
from topology.selectors import Requirement, SelectorTerm, parse_node_terms

__all__ = ["BLOCKING_EFFECTS", "NodeRecord", "OwnerRef", "PodRecord", "RecordError",
           "Requirement", "SelectorTerm", "Taint", "Toleration", "node_from_json",
           "pod_from_json"]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        value = f"={self.value}" if self.value else ""
        return f"{self.key}{value}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


# Taints that block placement; PreferNoSchedule only scores, so it never excludes a node.
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    labels: dict[str, str]
    allocatable: dict[str, int]
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = True


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str
    api_version: str = ""


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    uid: str = ""
    node_name: str = ""
    scheduler_name: str = "default-scheduler"
    phase: str = "Pending"
    requests: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner: OwnerRef | None = None
    priority: int = 0
    created: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    affinity: tuple[SelectorTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    deleting: bool = False
    resource_version: str = ""
    scheduling_gates: tuple[str, ...] = ()
    """spec.schedulingGates: while any is present the pod is not schedulable (the API
    server refuses its binding); whoever set a gate removes it when the pod may go."""
    inter_pod: InterPod = NO_RULES
    volumes: Volumes = NO_VOLUMES
    nominated_node: str = ""
    """status.nominatedNodeName: where a preemption made room for this pod."""
    preemption_policy: str = "PreemptLowerPriority"
    scheduling_group: str = ""
    """spec.schedulingGroup.podGroupName: the native (scheduling.k8s.io) PodGroup."""
    preferred_node_affinity: bool = False
    """It carries preferred node affinity terms (kube-scheduler scores them; Phalanx does
    not, and explain says so)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def consumes_capacity(self) -> bool:
        """Bound and not finished: counts against its node, whoever scheduled it."""
        return bool(self.node_name) and not self.terminal


def _str_map(obj: str, field_name: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    # map(type, ...) runs in C: this check is on the path of every node of a 100k list.
    if not isinstance(raw, dict) or set(map(type, raw.values())) - {str} or set(
        map(type, raw)
    ) - {str}:
        raise RecordError(obj, field_name, "a map of strings", raw)
    return dict(raw)


def _resources(obj: str, field_name: str, raw: Any) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecordError(obj, field_name, "a map of resource quantities", raw)
    out = {}
    for name, quantity in raw.items():
        try:
            out[name] = to_units(name, quantity)
        except ValueError:
            raise RecordError(
                obj, f"{field_name}.{name}", "a resource quantity", quantity
            ) from None
    return out


def node_from_json(raw: dict[str, Any]) -> NodeRecord:
    meta = raw.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise RecordError("node", "metadata.name", "a non-empty string", name)
    obj = f"node {name}"
    spec, status = raw.get("spec") or {}, raw.get("status") or {}
    taints = []
    for index, taint in enumerate(spec.get("taints") or ()):
        if not isinstance(taint, dict) or not isinstance(taint.get("key"), str):
            raise RecordError(obj, f"spec.taints[{index}]", "a taint with a key", taint)
        taints.append(Taint(taint["key"], str(taint.get("value") or ""), str(taint.get("effect"))))
    ready = False
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    return NodeRecord(
        name=name,
        labels=_str_map(obj, "metadata.labels", meta.get("labels")),
        allocatable=_resources(obj, "status.allocatable", status.get("allocatable")),
        taints=tuple(taints),
        unschedulable=bool(spec.get("unschedulable")),
        ready=ready,
    )


def _container_requests(obj: str, where: str, container: Any) -> dict[str, int]:
    if not isinstance(container, dict):
        raise RecordError(obj, where, "a container object", container)
    resources = container.get("resources") or {}
    requests = _resources(obj, f"{where}.resources.requests", resources.get("requests"))
    # A limit without a request defaults the request to the limit (API server defaulting;
    # files written by hand may lack it).
    limits = _resources(obj, f"{where}.resources.limits", resources.get("limits"))
    for name, amount in limits.items():
        requests.setdefault(name, amount)
    return requests


def _add(into: dict[str, int], other: dict[str, int]) -> None:
    for name, amount in other.items():
        into[name] = into.get(name, 0) + amount


def effective_requests(obj: str, spec: dict[str, Any]) -> dict[str, int]:
    """What the pod reserves on its node, by kube-scheduler's rule: the larger of (app
    containers + sidecars) and each regular init container plus the sidecars started
    before it; plus pod overhead; plus one `pods` slot."""
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for index, init in enumerate(spec.get("initContainers") or ()):
        requests = _container_requests(obj, f"spec.initContainers[{index}]", init)
        if isinstance(init, dict) and init.get("restartPolicy") == "Always":
            _add(sidecars, requests)
            continue
        step = dict(sidecars)
        _add(step, requests)
        for name, amount in step.items():
            init_peak[name] = max(init_peak.get(name, 0), amount)
    total = dict(sidecars)
    for index, container in enumerate(spec.get("containers") or ()):
        _add(total, _container_requests(obj, f"spec.containers[{index}]", container))
    for name, amount in init_peak.items():
        total[name] = max(total.get(name, 0), amount)
    # Pod-level resources (spec.resources), where set, are what the pod reserves.
    pod_level = spec.get("resources")
    if isinstance(pod_level, dict):
        for name, amount in _container_requests(obj, "spec", {"resources": pod_level}).items():
            total[name] = amount
    _add(total, _resources(obj, "spec.overhead", spec.get("overhead")))
    total["pods"] = 1
    return {name: amount for name, amount in total.items() if amount > 0}


def _affinity(obj: str, spec: dict[str, Any]) -> tuple[tuple[SelectorTerm, ...], bool]:
    """Required node affinity terms, and whether preferred ones are present."""
    node_affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = parse_node_terms(obj, "spec.affinity.nodeAffinity.required.nodeSelectorTerms",
                             required.get("nodeSelectorTerms"))
    return terms, bool(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution"))


def _tolerations(obj: str, spec: dict[str, Any]) -> tuple[Toleration, ...]:
    out = []
    for index, tol in enumerate(spec.get("tolerations") or ()):
        if not isinstance(tol, dict):
            raise RecordError(obj, f"spec.tolerations[{index}]", "a toleration", tol)
        out.append(Toleration(str(tol.get("key") or ""), str(tol.get("operator") or "Equal"),
                              str(tol.get("value") or ""), str(tol.get("effect") or "")))
    return tuple(out)


def _scheduling_group(obj: str, spec: dict[str, Any]) -> str:
    group = spec.get("schedulingGroup")
    if group is None:
        return ""
    name = group.get("podGroupName") if isinstance(group, dict) else None
    if not isinstance(name, str) or not name:
        raise RecordError(obj, "spec.schedulingGroup.podGroupName", "a PodGroup name", group)
    return name


def _gates(obj: str, spec: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for index, gate in enumerate(spec.get("schedulingGates") or ()):
        if not isinstance(gate, dict) or not isinstance(gate.get("name"), str):
            raise RecordError(obj, f"spec.schedulingGates[{index}]", "a gate with a name", gate)
        out.append(gate["name"])
    return tuple(out)


def pod_from_json(raw: dict[str, Any]) -> PodRecord:
    meta = raw.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        raise RecordError("pod", "metadata.name", "a non-empty string", name)
    obj = f"pod {namespace}/{name}"
    spec, status = raw.get("spec") or {}, raw.get("status") or {}
    owner = None
    for ref in meta.get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller"):
            owner = OwnerRef(str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid", "")),
                             str(ref.get("apiVersion", "")))
    priority = spec.get("priority") or 0
    if not isinstance(priority, int):
        raise RecordError(obj, "spec.priority", "an integer", priority)
    labels = _str_map(obj, "metadata.labels", meta.get("labels"))
    affinity, preferred = _affinity(obj, spec) if spec.get("affinity") else ((), False)
    policy = spec.get("preemptionPolicy") or "PreemptLowerPriority"
    if policy not in ("PreemptLowerPriority", "Never"):
        raise RecordError(obj, "spec.preemptionPolicy", "PreemptLowerPriority or Never", policy)
    return PodRecord(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        node_name=str(spec.get("nodeName") or ""),
        scheduler_name=str(spec.get("schedulerName") or "default-scheduler"),
        phase=str(status.get("phase") or "Pending"),
        requests=effective_requests(obj, spec),
        labels=labels,
        annotations=_str_map(obj, "metadata.annotations", meta.get("annotations")),
        owner=owner,
        priority=priority,
        created=str(meta.get("creationTimestamp") or ""),
        node_selector=_str_map(obj, "spec.nodeSelector", spec.get("nodeSelector")),
        affinity=affinity,
        tolerations=_tolerations(obj, spec),
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=str(meta.get("resourceVersion") or ""),
        scheduling_gates=_gates(obj, spec),
        inter_pod=inter_pod(obj, spec, labels),
        volumes=volumes(obj, name, spec),
        nominated_node=str(status.get("nominatedNodeName") or ""),
        preemption_policy=policy,
        preferred_node_affinity=preferred,
        scheduling_group=_scheduling_group(obj, spec),
    )
