"""Compact, frozen records parsed straight from raw Node and Pod JSON.

Shared by the scheduler's cache (watch events) and `phalanx place` (kubectl -o json files).
Parsing never goes through the generated client models, which are ~100x slower. A record
keeps only what placement needs; malformed fields raise RecordError naming the object and
the field, so one bad object is reported instead of poisoning a whole list.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import msgspec
import orjson

from topology.errors import RecordError
from topology.podrules import (
    IN_TREE_DISKS,
    NO_RULES,
    NO_VOLUMES,
    InterPod,
    Volumes,
    inter_pod,
    volumes,
)
from topology.quantity import to_units
from topology.selectors import Requirement, SelectorTerm, parse_node_terms

__all__ = [
    "BLOCKING_EFFECTS",
    "NodeRecord",
    "NodeWire",
    "OwnerRef",
    "PodRecord",
    "PodWire",
    "RecordError",
    "Requirement",
    "SelectorTerm",
    "StructWire",
    "Taint",
    "Toleration",
    "WireNode",
    "WirePod",
    "node_from_json",
    "nodes_from_list_bytes",
    "pod_from_json",
]

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
    spec, status = raw.get("spec") or {}, raw.get("status") or {}
    ready = False
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    return _node_record(meta.get("name"), meta.get("labels"), spec.get("taints"),
                        spec.get("unschedulable"), status.get("allocatable"), ready)


def _node_record(name: Any, labels: Any, taint_list: Any, unschedulable: Any,
                 allocatable: Any, ready: bool, *, labels_checked: bool = False) -> NodeRecord:
    """The one place a NodeRecord is built and checked, for dicts (`node_from_json`) and
    for the wire path (`nodes_from_list_bytes`, whose structs have checked the labels'
    types already: `labels_checked`)."""
    if not isinstance(name, str) or not name:
        raise RecordError("node", "metadata.name", "a non-empty string", name)
    obj = f"node {name}"
    taints = []
    for index, taint in enumerate(taint_list or ()):
        if not isinstance(taint, dict) or not isinstance(taint.get("key"), str):
            raise RecordError(obj, f"spec.taints[{index}]", "a taint with a key", taint)
        taints.append(Taint(taint["key"], str(taint.get("value") or ""), str(taint.get("effect"))))
    return NodeRecord(
        name=name,
        labels=(labels or {}) if labels_checked else _str_map(obj, "metadata.labels", labels),
        allocatable=_allocatable(obj, allocatable),
        taints=tuple(taints),
        unschedulable=bool(unschedulable),
        ready=ready,
    )


_ALLOCATABLE: dict[Any, dict[str, int]] = {}


def _allocatable(obj: str, raw: Any) -> dict[str, int]:
    """status.allocatable in units, one shared dict per distinct value (records are
    read-only; a fleet has a few instance types, so 110,000 nodes parse a few maps)."""
    if isinstance(raw, dict):
        try:
            key = tuple(raw.items())
            found = _ALLOCATABLE.get(key)
        except TypeError:  # an unhashable value: parsed, and refused, below
            key, found = None, None
        if found is not None:
            return found
        parsed = _resources(obj, "status.allocatable", raw)
        if key is not None and len(_ALLOCATABLE) < 4096:
            _ALLOCATABLE[key] = parsed
        return parsed
    return _resources(obj, "status.allocatable", raw)


class _WireCondition(msgspec.Struct, gc=False):
    type: Any = None
    status: Any = None


class _WireNodeMeta(msgspec.Struct, gc=False):
    name: Any = None
    resourceVersion: Any = None
    labels: dict[str, str] | None = None


class _WireNodeSpec(msgspec.Struct, gc=False):
    taints: Any = None
    unschedulable: Any = None


class _WireNodeStatus(msgspec.Struct, gc=False):
    allocatable: Any = None
    conditions: list[_WireCondition] | None = None


class WireNode(msgspec.Struct, gc=False):
    """A node (or, in a watch ERROR event, a Status: `status` is then a string and
    `code`, `reason`, `message` are set) with only what placement reads."""

    kind: Any = None
    metadata: _WireNodeMeta = msgspec.field(default_factory=_WireNodeMeta)
    spec: _WireNodeSpec = msgspec.field(default_factory=_WireNodeSpec)
    status: _WireNodeStatus | str | None = None
    code: Any = None
    reason: Any = None
    message: Any = None


class _WireListMeta(msgspec.Struct, gc=False):
    resourceVersion: str = ""
    # "continue" is a Python keyword: renamed on the wire.
    next: str = msgspec.field(default="", name="continue")


class _WireNodeList(msgspec.Struct, gc=False):
    kind: str = ""
    metadata: _WireListMeta = msgspec.field(default_factory=_WireListMeta)
    items: list[WireNode] = msgspec.field(default_factory=list)


class _WireNodeEvent(msgspec.Struct, gc=False):
    type: str = ""
    object: WireNode = msgspec.field(default_factory=WireNode)


_NODE_LIST = msgspec.json.Decoder(_WireNodeList)
_NO_NODE_STATUS = _WireNodeStatus()


def _wire_ready(conditions: list[_WireCondition] | None) -> bool:
    ready = False
    for condition in conditions or ():
        if condition.type == "Ready":
            ready = condition.status == "True"
    return ready


def _wire_node_record(node: WireNode) -> NodeRecord:
    status = node.status if isinstance(node.status, _WireNodeStatus) else _NO_NODE_STATUS
    return _node_record(node.metadata.name, node.metadata.labels, node.spec.taints,
                        node.spec.unschedulable, status.allocatable,
                        _wire_ready(status.conditions), labels_checked=True)


def nodes_from_list_bytes(data: bytes) -> list[NodeRecord] | None:
    """The nodes of a NodeList (`kubectl get nodes -o json`) straight from its bytes,
    skipping what placement never reads (images, managedFields, addresses): ~3x faster
    than dicts at 110,000 nodes. None when the bytes are no NodeList the structs take
    (labels not all strings, say: then the dict path reads them and names what is
    wrong). Items of another kind are skipped, as the dict path skips them."""
    try:
        listed = _NODE_LIST.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if listed.kind != "NodeList":
        return None
    return [_wire_node_record(n) for n in listed.items if n.kind in (None, "Node")]


class StructWire:
    """kube.watch's WireFormat over msgspec structs that name only what placement reads:
    every other field is skipped without being built. Decoding whole objects into dicts
    is most of what a list costs, and the dicts of a re-list (a few KiB per object,
    interleaved with the records kept) are what fragments the heap so that RSS stays at
    the re-list's high-water mark. A page or event the structs cannot take (a field of
    another type than the API's) falls back to plain dicts, which the dict path reads and
    reports on object by object."""

    def __init__(self, listed: type[Any], event: type[Any]) -> None:
        self._list = msgspec.json.Decoder(listed)
        self._event = msgspec.json.Decoder(event)

    def page(self, data: bytes) -> tuple[list[Any], str, str]:
        """(items, resourceVersion, continue token) of one list page."""
        try:
            page = self._list.decode(data)
        except msgspec.ValidationError:
            raw = orjson.loads(data)
            meta = raw.get("metadata") or {}
            return (list(raw.get("items") or ()), str(meta.get("resourceVersion") or ""),
                    str(meta.get("continue") or ""))
        return page.items, page.metadata.resourceVersion, page.metadata.next

    def event(self, line: bytes) -> tuple[str, Any]:
        """(type, object) of one watch event line; the object is a struct, or a dict
        where the structs cannot take it."""
        try:
            event = self._event.decode(line)
        except msgspec.ValidationError:
            raw = orjson.loads(line)
            return str(raw.get("type")), raw.get("object") or {}
        return event.type, event.object

    @staticmethod
    def version(obj: Any) -> str:
        if isinstance(obj, dict):
            return str((obj.get("metadata") or {}).get("resourceVersion") or "")
        meta = obj.metadata
        return str(meta.resourceVersion or "") if meta is not None else ""

    @staticmethod
    def error(obj: Any) -> tuple[int, str, str]:
        if isinstance(obj, dict):
            return (int(obj.get("code") or 500), str(obj.get("reason")),
                    str(obj.get("message")))
        return int(obj.code or 500), str(obj.reason), str(obj.message)


class NodeWire(StructWire):
    """Decodes node lists and node watch events into WireNodes and turns those into
    NodeRecords (the dict path, `node_from_json`, for what fell back to dicts)."""

    def __init__(self) -> None:
        super().__init__(_WireNodeList, _WireNodeEvent)

    @staticmethod
    def record(node: WireNode | dict[str, Any]) -> NodeRecord:
        if isinstance(node, WireNode):
            return _wire_node_record(node)
        return node_from_json(node)

    @staticmethod
    def name(node: WireNode | dict[str, Any]) -> str:
        if isinstance(node, WireNode):
            return str(node.metadata.name)
        return str((node.get("metadata") or {}).get("name"))


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


def _scheduling_group(obj: str, group: Any) -> str:
    if group is None:
        return ""
    name = group.get("podGroupName") if isinstance(group, dict) else None
    if not isinstance(name, str) or not name:
        raise RecordError(obj, "spec.schedulingGroup.podGroupName", "a PodGroup name", group)
    return name


def _gates(obj: str, gates: Any) -> tuple[str, ...]:
    out = []
    for index, gate in enumerate(gates or ()):
        if not isinstance(gate, dict) or not isinstance(gate.get("name"), str):
            raise RecordError(obj, f"spec.schedulingGates[{index}]", "a gate with a name", gate)
        out.append(gate["name"])
    return tuple(out)


def _owner(refs: Any) -> OwnerRef | None:
    owner = None
    for ref in refs or ():
        if isinstance(ref, dict) and ref.get("controller"):
            owner = OwnerRef(str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid", "")),
                             str(ref.get("apiVersion", "")))
    return owner


@dataclass(frozen=True, slots=True)
class _Parts:
    """What a pod's template decides (identical for every pod of one DaemonSet,
    ReplicaSet or StatefulSet revision): the wire path computes each once per distinct
    JSON and shares it between pods."""

    labels: dict[str, str]
    annotations: dict[str, str]
    owner: OwnerRef | None
    requests: dict[str, int]
    affinity: tuple[SelectorTerm, ...]
    preferred: bool
    tolerations: tuple[Toleration, ...]
    inter_pod: InterPod
    volumes: Volumes


def _record(obj: str, namespace: str, name: str, parts: _Parts, *, uid: Any, node_name: Any,
            scheduler_name: Any, phase: Any, priority: Any, created: Any, deletion: Any,
            version: Any, nominated: Any, policy: Any, node_selector: Any, gates: Any,
            group: Any) -> PodRecord:
    """The one place a PodRecord is assembled and its per-pod scalars checked, for both
    the dict path (`pod_from_json`) and the wire path (`PodWire`)."""
    priority = priority or 0
    if not isinstance(priority, int):
        raise RecordError(obj, "spec.priority", "an integer", priority)
    policy = policy or "PreemptLowerPriority"
    if policy not in ("PreemptLowerPriority", "Never"):
        raise RecordError(obj, "spec.preemptionPolicy", "PreemptLowerPriority or Never", policy)
    # Positional: keywords cost ~2 us more per record, 2 s at a million pods. The order
    # is checked against the class below (_POSITIONAL).
    return PodRecord(
        namespace, name, str(uid or ""), _intern(str(node_name or "")),
        _intern(str(scheduler_name or "default-scheduler")), _intern(str(phase or "Pending")),
        parts.requests, parts.labels, parts.annotations, parts.owner, priority,
        str(created or ""),
        _str_map(obj, "spec.nodeSelector", node_selector) or _EMPTY if node_selector is not None
        else _EMPTY,
        parts.affinity, parts.tolerations, bool(deletion), str(version or ""),
        _gates(obj, gates) if gates else (), parts.inter_pod, parts.volumes,
        str(nominated or ""), _intern(policy),
        _scheduling_group(obj, group) if group is not None else "", parts.preferred)


_POSITIONAL = ("namespace", "name", "uid", "node_name", "scheduler_name", "phase", "requests",
               "labels", "annotations", "owner", "priority", "created", "node_selector",
               "affinity", "tolerations", "deleting", "resource_version", "scheduling_gates",
               "inter_pod", "volumes", "nominated_node", "preemption_policy",
               "scheduling_group", "preferred_node_affinity")
if tuple(f.name for f in fields(PodRecord)) != _POSITIONAL:
    raise ImportError("PodRecord's fields moved: update _record's positional call")


_EMPTY: dict[str, str] = {}
"""Shared by every record without labels, annotations or a nodeSelector (records are
read-only)."""


def pod_from_json(raw: dict[str, Any]) -> PodRecord:
    meta = raw.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        raise RecordError("pod", "metadata.name", "a non-empty string", name)
    obj = f"pod {namespace}/{name}"
    spec, status = raw.get("spec") or {}, raw.get("status") or {}
    labels = _str_map(obj, "metadata.labels", meta.get("labels"))
    affinity, preferred = _affinity(obj, spec) if spec.get("affinity") else ((), False)
    parts = _Parts(labels, _str_map(obj, "metadata.annotations", meta.get("annotations")),
                   _owner(meta.get("ownerReferences")), effective_requests(obj, spec),
                   affinity, preferred, _tolerations(obj, spec),
                   inter_pod(obj, spec, labels), volumes(obj, name, spec))
    return _record(obj, namespace, name, parts, uid=meta.get("uid"),
                   node_name=spec.get("nodeName"), scheduler_name=spec.get("schedulerName"),
                   phase=status.get("phase"), priority=spec.get("priority"),
                   created=meta.get("creationTimestamp"), deletion=meta.get("deletionTimestamp"),
                   version=meta.get("resourceVersion"),
                   nominated=status.get("nominatedNodeName"),
                   policy=spec.get("preemptionPolicy"), node_selector=spec.get("nodeSelector"),
                   gates=spec.get("schedulingGates"), group=spec.get("schedulingGroup"))


_intern = sys.intern
"""Node names, phases and scheduler names repeat across a million pods: one copy each."""


# -- the wire path: pods straight from the API server's bytes ----------------------------
#
# A pod as the API server sends it is ~4-13 KB of JSON (managedFields, env, probes, mounts,
# container statuses), of which placement reads a few hundred bytes. Decoding all of it
# into dicts (orjson) and then reading it costs ~100-140 us per pod (most of it orjson):
# minutes for a million.
# msgspec decodes into the structs below and skips every other field without building
# it; the sections records read from are kept as raw JSON, decoded only the first time
# that exact JSON is seen (pods of one template share it) and parsed by the same helpers
# as `pod_from_json` above. Every field `pod_from_json` reads must be named here
# (tests/unit/test_pod_wire.py compares both paths on every rule and on real API server
# pods).

_NO_RAW = msgspec.Raw()


class _WireMeta(msgspec.Struct, gc=False):
    name: Any = None
    namespace: Any = None
    uid: Any = None
    resourceVersion: Any = None
    creationTimestamp: Any = None
    deletionTimestamp: Any = None
    labels: msgspec.Raw = _NO_RAW
    annotations: msgspec.Raw = _NO_RAW
    ownerReferences: msgspec.Raw = _NO_RAW


class _WireAffinity(msgspec.Struct, gc=False):
    nodeAffinity: msgspec.Raw = _NO_RAW
    podAffinity: msgspec.Raw = _NO_RAW
    podAntiAffinity: msgspec.Raw = _NO_RAW


class _WireContainer(msgspec.Struct, gc=False):
    """What placement reads of a container. Not the whole container's JSON: the service
    account admission plugin mounts each pod's token under a random volume name, and
    controllers write per-pod env (a rank), so no two pods' containers are the same
    JSON and a memo keyed by it held one entry per pod ever seen."""

    name: str | None = None
    resources: msgspec.Raw = _NO_RAW
    ports: msgspec.Raw = _NO_RAW
    restartPolicy: str | None = None
    """Both typed: a value of another type (not from a real API server, whose validation
    refuses it) sends the page to the dict path, which names the field, instead of
    making the memo key unhashable."""


Containers = tuple[tuple[str | None, bytes, bytes, str | None], ...] | None
"""A container list as a memo key: (name, resources JSON, ports JSON, restartPolicy)."""


def _containers_key(containers: list[_WireContainer] | None) -> Containers:
    if containers is None:
        return None
    return tuple((c.name, bytes(c.resources), bytes(c.ports), c.restartPolicy)
                 for c in containers)


def _containers_json(key: Containers) -> list[dict[str, Any]] | None:
    """The containers as the dict path reads them, from their memo key."""
    if key is None:
        return None
    return [{"name": name, "resources": _loads(resources), "ports": _loads(ports),
             "restartPolicy": policy} for name, resources, ports, policy in key]


class _WireSpec(msgspec.Struct, gc=False):
    nodeName: Any = None
    schedulerName: Any = None
    priority: Any = None
    preemptionPolicy: Any = None
    nodeSelector: Any = None
    schedulingGates: Any = None
    schedulingGroup: Any = None
    affinity: _WireAffinity | None = None
    tolerations: msgspec.Raw = _NO_RAW
    containers: list[_WireContainer] | None = None
    initContainers: list[_WireContainer] | None = None
    resources: msgspec.Raw = _NO_RAW
    overhead: msgspec.Raw = _NO_RAW
    volumes: msgspec.Raw = _NO_RAW
    resourceClaims: msgspec.Raw = _NO_RAW
    topologySpreadConstraints: msgspec.Raw = _NO_RAW


class _WireStatus(msgspec.Struct, gc=False):
    phase: Any = None
    nominatedNodeName: Any = None


_NO_META, _NO_AFFINITY, _NO_SPEC, _NO_STATUS = (
    _WireMeta(), _WireAffinity(), _WireSpec(), _WireStatus())


class WirePod(msgspec.Struct, gc=False):
    """A pod (or, in a watch ERROR event, a Status: `status` is then a string and
    `code`, `reason`, `message` are set) with only what placement reads."""

    metadata: _WireMeta | None = None
    spec: _WireSpec | None = None
    status: _WireStatus | str | None = None
    code: Any = None
    reason: Any = None
    message: Any = None

    def key(self) -> str:
        meta = self.metadata
        if meta is None:
            return "default/None"
        return f"{meta.namespace or 'default'}/{meta.name}"


class _WireList(msgspec.Struct, gc=False):
    metadata: _WireListMeta = msgspec.field(default_factory=_WireListMeta)
    items: list[WirePod] = msgspec.field(default_factory=list)


class _WireEvent(msgspec.Struct, gc=False):
    type: str = ""
    object: WirePod = msgspec.field(default_factory=WirePod)


_VOLUME_FIELDS = re.compile(
    b'"(?:persistentVolumeClaim|ephemeral|' + "|".join(IN_TREE_DISKS).encode() + b')"')
"""A pod's volumes can tie it to nodes only through these fields. The API server (Go's
encoder) writes field names verbatim, so volumes whose JSON holds none of them need no
parsing: most pods only mount a service-account token, under a random name."""
_MEMO_CAP = 1 << 18
"""Distinct JSON sections remembered per kind; a DaemonSet's node affinity differs per
node, so this holds one entry per node of a 100k-node fleet and more."""
_MISSING = object()
_NO_CLAIMS = (b"", b"null", b"[]")
_HELD_BY: dict[str, Callable[[PodRecord], object]] = {
    "labels": lambda r: r.labels, "annotations": lambda r: r.annotations,
    "owner": lambda r: r.owner, "requests": lambda r: r.requests,
    "node_affinity": lambda r: r.affinity, "tolerations": lambda r: r.tolerations,
    "inter_pod": lambda r: r.inter_pod}
"""Per memo table, the part of a record that is the very object an entry holds (a
node_affinity entry holds (terms, preferred); records keep the terms)."""
_SWEEP_SLACK = 4096
"""Entries a table may hold beyond 1.25 per live pod before it is swept (PodWire.crowded):
small clusters are not swept over a handful of stale entries."""


def _loads(raw: msgspec.Raw | bytes) -> Any:
    return orjson.loads(raw) if raw else None


class PodWire(StructWire):
    """Decodes pod lists and pod watch events from the API server's bytes into WirePods
    and turns those into PodRecords, sharing what pods of one template have in common
    (the records are read-only, so one dict or tuple serves them all)."""

    def __init__(self) -> None:
        super().__init__(_WireList, _WireEvent)
        self._memo: dict[str, dict[Any, Any]] = {kind: {} for kind in _HELD_BY}

    # -- WirePod -> PodRecord ----------------------------------------------------------------
    def _cached(self, kind: str, key: Any, compute: Callable[[], Any]) -> Any:
        table = self._memo[kind]
        found = table.get(key, _MISSING)
        if found is _MISSING:
            found = compute()  # a RecordError names this pod and is not remembered
            if len(table) >= _MEMO_CAP:
                table.clear()
            table[key] = found
        return found

    def forget(self, pod: WirePod | dict[str, Any]) -> None:
        """Drops what a pod that is gone had remembered and no other pod is likely to
        share: its labels and annotations (a rank or index label makes them unique per
        pod), its owner (one per job), its node affinity (one per node for a DaemonSet).
        Without this the memo holds every pod ever seen, up to its cap (~0.75 KiB per
        pod: ~190 MiB of labels alone for 262k pods long gone). A pod that did share an
        entry keeps its own reference; the next one to need it parses it again. This
        drops the entries of the pod's last state only: see crowded() for the rest."""
        if not isinstance(pod, WirePod):
            return
        meta, spec = pod.metadata or _NO_META, pod.spec or _NO_SPEC
        memo = self._memo
        memo["labels"].pop(bytes(meta.labels), None)
        memo["annotations"].pop(bytes(meta.annotations), None)
        memo["owner"].pop(bytes(meta.ownerReferences), None)
        memo["node_affinity"].pop(bytes((spec.affinity or _NO_AFFINITY).nodeAffinity), None)

    def crowded(self, live: int) -> bool:
        """Whether some table holds more than 1.25 entries per live pod (plus a slack):
        then entries no pod uses have piled up where forget() cannot see them: the
        earlier labels and annotations of pods that changed them (every bound pod: the
        API server's PodTopologyLabels plugin adds the node's zone and region labels at
        binding; a controller writing an annotation every second leaves one entry per
        write), the pods deleted while no watch ran (no DELETED event names them),
        per-pod rules keyed by a pod's own labels (matchLabelKeys). Checked on each
        event: a few len() calls."""
        limit = live + live // 4 + _SWEEP_SLACK
        return any(len(table) > limit for table in self._memo.values())

    def tidy(self, live: Collection[PodRecord]) -> None:
        """Sweeps when crowded: what the cache calls after each event."""
        if self.crowded(len(live)):
            self.sweep(live)

    def sizes(self) -> str:
        """Entries per table, for the heap census (`kind=count ...`)."""
        return " ".join(f"{kind}={len(table)}" for kind, table in self._memo.items())

    def sweep(self, live: Iterable[PodRecord]) -> None:
        """Keeps only the entries some live record holds (by identity: an entry is the
        very object the records share). O(live pods); called when crowded() and after a
        re-list, so its cost is amortised over at least a quarter of the live pods'
        worth of new entries. A record elsewhere (a snapshot in flight) keeps its own
        reference to a dropped entry; the next pod that needs it parses it again."""
        records = list(live)
        for kind, held_by in _HELD_BY.items():
            held = {id(held_by(record)) for record in records}
            table = self._memo[kind]
            if kind == "node_affinity":
                self._memo[kind] = {k: v for k, v in table.items() if id(v[0]) in held}
            else:
                self._memo[kind] = {k: v for k, v in table.items() if id(v) in held}

    def record(self, pod: WirePod | dict[str, Any]) -> PodRecord:
        if not isinstance(pod, WirePod):
            return pod_from_json(pod)
        meta, spec = pod.metadata or _NO_META, pod.spec or _NO_SPEC
        name, namespace = meta.name, meta.namespace or "default"
        if not isinstance(name, str) or not name:
            raise RecordError("pod", "metadata.name", "a non-empty string", name)
        if not isinstance(namespace, str):
            raise RecordError("pod", "metadata.namespace", "a string", namespace)
        obj = f"pod {namespace}/{name}"
        memo = self._memo
        # Each part: one dict lookup by its JSON when seen before (the common case: no
        # closure is even built), parsed by the dict path's helper the first time.
        labels_raw = bytes(meta.labels)
        labels = memo["labels"].get(labels_raw, _MISSING)
        if labels is _MISSING:
            labels = self._cached("labels", labels_raw, lambda: _str_map(
                obj, "metadata.labels", _loads(labels_raw)) or _EMPTY)
        annotations_raw = bytes(meta.annotations)
        annotations = memo["annotations"].get(annotations_raw, _MISSING)
        if annotations is _MISSING:
            annotations = self._cached("annotations", annotations_raw, lambda: _str_map(
                obj, "metadata.annotations", _loads(annotations_raw)) or _EMPTY)
        owners = bytes(meta.ownerReferences)
        owner = memo["owner"].get(owners, _MISSING)
        if owner is _MISSING:
            owner = self._cached("owner", owners, lambda: _owner(_loads(owners)))
        containers = _containers_key(spec.containers)
        init = _containers_key(spec.initContainers)
        resources, overhead = bytes(spec.resources), bytes(spec.overhead)
        requests_key = (containers, init, resources, overhead)
        requests = memo["requests"].get(requests_key, _MISSING)
        if requests is _MISSING:
            requests = self._cached("requests", requests_key, lambda: effective_requests(
                obj, {"containers": _containers_json(containers),
                      "initContainers": _containers_json(init),
                      "resources": _loads(resources), "overhead": _loads(overhead)}))
        affinity = spec.affinity or _NO_AFFINITY
        node_affinity = bytes(affinity.nodeAffinity)
        found = memo["node_affinity"].get(node_affinity, _MISSING)
        if found is _MISSING:
            found = self._cached(
                "node_affinity", node_affinity,
                lambda: _affinity(obj, {"affinity": {"nodeAffinity": _loads(node_affinity)}}))
        terms, preferred = found
        tolerations_raw = bytes(spec.tolerations)
        tolerations = memo["tolerations"].get(tolerations_raw, _MISSING)
        if tolerations is _MISSING:
            tolerations = self._cached("tolerations", tolerations_raw, lambda: _tolerations(
                obj, {"tolerations": _loads(tolerations_raw)}))
        rules = self._inter_pod(obj, affinity, spec, containers, init, labels, labels_raw)
        volume_list, claims = bytes(spec.volumes), bytes(spec.resourceClaims)
        if claims in _NO_CLAIMS and _VOLUME_FIELDS.search(volume_list) is None:
            pod_volumes = NO_VOLUMES
        else:  # names ephemeral claims after the pod: not shared
            pod_volumes = volumes(obj, name, {"volumes": _loads(volume_list),
                                              "resourceClaims": _loads(claims)})
        parts = _Parts(labels, annotations, owner, requests, terms, preferred, tolerations,
                       rules, pod_volumes)
        status = pod.status if isinstance(pod.status, _WireStatus) else _NO_STATUS
        return _record(obj, _intern(namespace), name, parts, uid=meta.uid,
                       node_name=spec.nodeName, scheduler_name=spec.schedulerName,
                       phase=status.phase, priority=spec.priority,
                       created=meta.creationTimestamp, deletion=meta.deletionTimestamp,
                       version=meta.resourceVersion, nominated=status.nominatedNodeName,
                       policy=spec.preemptionPolicy, node_selector=spec.nodeSelector,
                       gates=spec.schedulingGates, group=spec.schedulingGroup)

    def _inter_pod(self, obj: str, affinity: _WireAffinity, spec: _WireSpec,
                   containers: Containers, init: Containers, labels: dict[str, str],
                   labels_raw: bytes) -> InterPod:
        pod_affinity, anti = bytes(affinity.podAffinity), bytes(affinity.podAntiAffinity)
        spread = bytes(spec.topologySpreadConstraints)
        key: tuple[Any, ...] = (pod_affinity, anti, spread, containers, init)
        if (pod_affinity or anti or spread) and any(
                b"LabelKeys" in part for part in (pod_affinity, anti, spread)):
            key += (labels_raw,)  # matchLabelKeys read the pod's own labels
        rules: InterPod
        found = self._memo["inter_pod"].get(key, _MISSING)
        if found is not _MISSING:
            rules = found
            return rules
        rules = self._cached("inter_pod", key, lambda: inter_pod(obj, {
            "affinity": {"podAffinity": _loads(pod_affinity),
                         "podAntiAffinity": _loads(anti)},
            "topologySpreadConstraints": _loads(spread),
            "containers": _containers_json(containers),
            "initContainers": _containers_json(init)}, labels))
        return rules
