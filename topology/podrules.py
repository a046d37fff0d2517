"""What a pod asks of its neighbours and of its node beyond resources: inter-pod
(anti-)affinity terms, host ports, topology spread constraints and the volumes that tie
it to nodes. Parsed from raw pod JSON into frozen records; matching rules live here too
(which namespaces a term looks at, when two host ports collide)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from topology.errors import RecordError
from topology.selectors import LabelSelector, Requirement, parse_label_selector


@dataclass(frozen=True, slots=True)
class PodAffinityTerm:
    """A required podAffinity/podAntiAffinity term: the pods `selector` matches, in the
    namespaces the term names, counted per domain of `topology_key`."""

    selector: LabelSelector | None
    """None: the term's labelSelector is absent and matches no pod."""
    topology_key: str
    namespaces: tuple[str, ...] = ()
    namespace_selector: LabelSelector | None = None

    def selects(self, owner_namespace: str, namespace: str, labels: Mapping[str, str],
                namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
        """Does the term (of a pod in `owner_namespace`) select a pod with `labels` in
        `namespace`? With neither namespaces nor a namespaceSelector, only the owner's
        namespace; otherwise the union of the list and the selector's matches."""
        if self.selector is None or not self.selector.matches(labels):
            return False
        if not self.namespaces and self.namespace_selector is None:
            return namespace == owner_namespace
        if namespace in self.namespaces:
            return True
        return self.namespace_selector is not None and self.namespace_selector.matches(
            namespace_labels.get(namespace, {}))


@dataclass(frozen=True, slots=True)
class HostPort:
    port: int
    protocol: str = "TCP"
    ip: str = "0.0.0.0"

    def conflicts(self, other: HostPort) -> bool:
        """kube-scheduler's NodePorts: same port and protocol, and the same address or
        either one the wildcard."""
        return (self.port == other.port and self.protocol == other.protocol
                and (self.ip == other.ip or "0.0.0.0" in (self.ip, other.ip)))


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    max_skew: int
    topology_key: str
    hard: bool
    """whenUnsatisfiable DoNotSchedule; ScheduleAnyway only scores."""
    selector: LabelSelector | None
    min_domains: int = 1
    honor_node_affinity: bool = True
    """nodeAffinityPolicy Honor (the default): only nodes the pod's node affinity and
    nodeSelector admit are counted as domains."""
    honor_taints: bool = False
    """nodeTaintsPolicy Honor: only nodes whose taints the pod tolerates (default Ignore)."""


@dataclass(frozen=True, slots=True)
class InterPod:
    """A pod's required inter-pod terms, host ports and spread constraints."""

    affinity: tuple[PodAffinityTerm, ...] = ()
    anti_affinity: tuple[PodAffinityTerm, ...] = ()
    host_ports: tuple[HostPort, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    preferred: bool = False
    """It carries preferred inter-pod terms (scored by kube-scheduler; Phalanx does not
    score them and says so)."""

    def __bool__(self) -> bool:
        return bool(self.affinity or self.anti_affinity or self.host_ports or self.spread
                    or self.preferred)

    def selector_keys(self) -> frozenset[str]:
        """Label keys its terms look at (which of the gang's own labels matter)."""
        keys: set[str] = set()
        for term in (*self.affinity, *self.anti_affinity):
            if term.selector is not None:
                keys |= term.selector.keys()
        for constraint in self.spread:
            if constraint.selector is not None:
                keys |= constraint.selector.keys()
        return frozenset(keys)


NO_RULES = InterPod()


@dataclass(frozen=True, slots=True)
class Volumes:
    """The volumes that tie a pod to nodes or need the API server's help to place."""

    claims: tuple[str, ...] = ()
    """PersistentVolumeClaims by name (ephemeral volumes included, as `<pod>-<volume>`)."""
    in_tree: tuple[str, ...] = ()
    """Volume types kube-scheduler's VolumeRestrictions checks on the node (in-tree
    disks such as awsElasticBlockStore, gcePersistentDisk, rbd, iscsi)."""
    resource_claims: tuple[str, ...] = ()
    """spec.resourceClaims names (Dynamic Resource Allocation)."""

    def __bool__(self) -> bool:
        return bool(self.claims or self.in_tree or self.resource_claims)


NO_VOLUMES = Volumes()
IN_TREE_DISKS = ("awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "rbd", "iscsi",
                 "cinder")


def _merge_label_keys(obj: str, where: str, selector: LabelSelector | None, raw: dict[str, Any],
                      labels: Mapping[str, str]) -> LabelSelector | None:
    """matchLabelKeys / mismatchLabelKeys: `key In (own value)` / `key NotIn (own value)`
    for each key the pod carries, as the API server merges them."""
    extra: list[Requirement] = []
    for field_name, op in (("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")):
        keys = raw.get(field_name) or []
        if not isinstance(keys, list):
            raise RecordError(obj, f"{where}.{field_name}", "a list of label keys", keys)
        extra += [Requirement(str(k), op, (labels[k],)) for k in keys if k in labels]
    if not extra or selector is None:
        return selector
    return selector.narrowed(tuple(extra))


def _terms(obj: str, where: str, items: Any, labels: Mapping[str, str]
           ) -> tuple[PodAffinityTerm, ...]:
    out = []
    for index, term in enumerate(items or ()):
        at = f"{where}[{index}]"
        if not isinstance(term, dict) or not isinstance(term.get("topologyKey"), str):
            raise RecordError(obj, at, "a pod affinity term with a topologyKey", term)
        selector = parse_label_selector(obj, f"{at}.labelSelector", term.get("labelSelector"))
        selector = _merge_label_keys(obj, at, selector, term, labels)
        namespaces = term.get("namespaces") or []
        if not isinstance(namespaces, list):
            raise RecordError(obj, f"{at}.namespaces", "a list of namespaces", namespaces)
        out.append(PodAffinityTerm(
            selector, term["topologyKey"], tuple(str(n) for n in namespaces),
            parse_label_selector(obj, f"{at}.namespaceSelector",
                                 term.get("namespaceSelector"))))
    return tuple(out)


def _host_ports(obj: str, spec: dict[str, Any]) -> tuple[HostPort, ...]:
    out = []
    sidecars = [c for c in spec.get("initContainers") or ()
                if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for container in [*(spec.get("containers") or ()), *sidecars]:
        if not isinstance(container, dict):
            continue  # the resource parser names a malformed container
        for index, port in enumerate(container.get("ports") or ()):
            if not isinstance(port, dict):
                raise RecordError(obj, f"containers[{container.get('name')}].ports[{index}]",
                                  "a container port", port)
            host = port.get("hostPort") or 0
            if not isinstance(host, int) or isinstance(host, bool) or host < 0:
                raise RecordError(obj, f"containers[{container.get('name')}].ports[{index}]."
                                  "hostPort", "a port number", host)
            if host:
                out.append(HostPort(host, str(port.get("protocol") or "TCP"),
                                    str(port.get("hostIP") or "0.0.0.0")))
    return tuple(out)


def _spread(obj: str, spec: dict[str, Any], labels: Mapping[str, str]
            ) -> tuple[SpreadConstraint, ...]:
    out = []
    for index, raw in enumerate(spec.get("topologySpreadConstraints") or ()):
        at = f"spec.topologySpreadConstraints[{index}]"
        if not isinstance(raw, dict):
            raise RecordError(obj, at, "a topology spread constraint", raw)
        skew, key = raw.get("maxSkew"), raw.get("topologyKey")
        if not isinstance(skew, int) or isinstance(skew, bool) or skew < 1:
            raise RecordError(obj, f"{at}.maxSkew", "an integer >= 1", skew)
        if not isinstance(key, str) or not key:
            raise RecordError(obj, f"{at}.topologyKey", "a label key", key)
        when = raw.get("whenUnsatisfiable")
        if when not in ("DoNotSchedule", "ScheduleAnyway"):
            raise RecordError(obj, f"{at}.whenUnsatisfiable", "DoNotSchedule or "
                              "ScheduleAnyway", when)
        minimum = raw.get("minDomains") or 1
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 1:
            raise RecordError(obj, f"{at}.minDomains", "an integer >= 1", minimum)
        selector = parse_label_selector(obj, f"{at}.labelSelector", raw.get("labelSelector"))
        selector = _merge_label_keys(obj, at, selector, raw, labels)
        affinity_policy = raw.get("nodeAffinityPolicy") or "Honor"
        taints_policy = raw.get("nodeTaintsPolicy") or "Ignore"
        for name, value in (("nodeAffinityPolicy", affinity_policy),
                            ("nodeTaintsPolicy", taints_policy)):
            if value not in ("Honor", "Ignore"):
                raise RecordError(obj, f"{at}.{name}", "Honor or Ignore", value)
        out.append(SpreadConstraint(skew, key, when == "DoNotSchedule", selector, minimum,
                                    affinity_policy == "Honor", taints_policy == "Honor"))
    return tuple(out)


def inter_pod(obj: str, spec: dict[str, Any], labels: Mapping[str, str]) -> InterPod:
    affinity = spec.get("affinity") or {}
    host_ports = _host_ports(obj, spec)
    spread = _spread(obj, spec, labels) if spec.get("topologySpreadConstraints") else ()
    if not affinity.get("podAffinity") and not affinity.get("podAntiAffinity") \
            and not host_ports and not spread:
        return NO_RULES
    found: dict[str, tuple[PodAffinityTerm, ...]] = {}
    preferred = False
    for kind in ("podAffinity", "podAntiAffinity"):
        section = affinity.get(kind) or {}
        if not isinstance(section, dict):
            raise RecordError(obj, f"spec.affinity.{kind}", "an object", section)
        found[kind] = _terms(obj, f"spec.affinity.{kind}.required",
                             section.get("requiredDuringSchedulingIgnoredDuringExecution"),
                             labels)
        preferred |= bool(section.get("preferredDuringSchedulingIgnoredDuringExecution"))
    return InterPod(found["podAffinity"], found["podAntiAffinity"], host_ports, spread,
                    preferred)


def volumes(obj: str, name: str, spec: dict[str, Any]) -> Volumes:
    raw = spec.get("volumes") or ()
    claims_raw = spec.get("resourceClaims") or ()
    if not raw and not claims_raw:
        return NO_VOLUMES
    claims, in_tree = [], []
    for index, volume in enumerate(raw):
        if not isinstance(volume, dict):
            raise RecordError(obj, f"spec.volumes[{index}]", "a volume", volume)
        claim = volume.get("persistentVolumeClaim")
        if isinstance(claim, dict):
            if not isinstance(claim.get("claimName"), str):
                raise RecordError(obj, f"spec.volumes[{index}].persistentVolumeClaim."
                                  "claimName", "a claim name", claim.get("claimName"))
            claims.append(claim["claimName"])
        elif volume.get("ephemeral") is not None:
            claims.append(f"{name}-{volume.get('name')}")  # the claim the controller makes
        in_tree += [kind for kind in IN_TREE_DISKS if volume.get(kind) is not None]
    resource = []
    for index, claim in enumerate(claims_raw):
        if not isinstance(claim, dict) or not isinstance(claim.get("name"), str):
            raise RecordError(obj, f"spec.resourceClaims[{index}]", "a named claim", claim)
        resource.append(claim["name"])
    return Volumes(tuple(claims), tuple(sorted(set(in_tree))), tuple(resource))
