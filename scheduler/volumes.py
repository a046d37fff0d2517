"""PersistentVolumeClaims as kube-scheduler's VolumeBinding, VolumeZone and
VolumeRestrictions plugins read them: what a pod's claims ask of nodes, and how a claim
waiting for its first consumer gets its volume before the pod is bound.

For each claim of a pod (by name; an ephemeral volume's claim is `<pod>-<volume>`):
- missing or being deleted: the pod cannot be placed (named);
- ReadWriteOncePod and used by another pod: cannot be placed;
- bound: the PersistentVolume's node affinity (and its zone labels) restrict the nodes;
  a bound claim whose volume is gone cannot be placed;
- unbound, StorageClass binding mode Immediate (or no class): cannot be placed until the
  volume controller binds it ("pod has unbound immediate PersistentVolumeClaims");
- unbound, WaitForFirstConsumer: nodes that have an available matching static volume (at
  most as many pods per node as such volumes), or, when the class has a provisioner, the
  nodes its allowedTopologies admit;
- CSI volumes count against each node's attach limit per driver (CSINode
  `spec.drivers[].allocatable.count`), volumes already attached there included, as
  kube-scheduler's NodeVolumeLimits counts them.

After the solve, claims waiting for their first consumer are settled as kube-scheduler's
PreBind does it: a chosen static volume gets `spec.claimRef` (the volume controller then
binds the pair), a claim to provision gets the `volume.kubernetes.io/selected-node`
annotation (the provisioner then creates the volume there). The pods stay assumed, their
room reserved, and are bound only once every claim is Bound (or the wait times out).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kube.resources import CSI_NODES, PVCS, PVS, STORAGE_CLASSES
from solver.reasons import Exclusion, ExclusionCode
from solver.request import NodeRule
from topology.quantity import to_units
from topology.records import NodeRecord, PodRecord
from topology.selectors import (
    Requirement,
    SelectorTerm,
    any_term,
    parse_label_selector,
    parse_node_terms,
)

Raw = dict[str, Any]
SELECTED_NODE = "volume.kubernetes.io/selected-node"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ZONE_LABELS = ("topology.kubernetes.io/zone", "topology.kubernetes.io/region",
               "failure-domain.beta.kubernetes.io/zone",
               "failure-domain.beta.kubernetes.io/region")
BIND_TIMEOUT_S = 600.0
"""How long pods wait for their claims to be bound (kube-scheduler's bindTimeoutSeconds)."""


@dataclass(frozen=True)
class VolumeAction:
    """One write that settles a claim for its first consumer."""

    namespace: str
    claim: str
    claim_uid: str
    node: str
    volume: str = ""
    """The static PersistentVolume to bind; empty: provision (selected-node)."""


def _meta(raw: Raw) -> dict[str, Any]:
    return dict(raw.get("metadata") or {})


def _storage(raw: Any) -> int:
    try:
        return to_units("storage", raw) if raw is not None else 0
    except ValueError:
        return 0


class VolumeView:
    """The claims, volumes and classes one cycle sees (raw objects from the cache)."""

    def __init__(self, claims: Mapping[str, Raw], volumes: Mapping[str, Raw],
                 classes: Mapping[str, Raw], pods: Iterable[PodRecord],
                 nodes: Sequence[NodeRecord], csi_nodes: Mapping[str, Raw] | None = None
                 ) -> None:
        self.claims = {f"{_meta(r).get('namespace')}/{_meta(r).get('name')}": r
                       for r in claims.values()}
        self.volumes = {str(_meta(r).get("name")): r for r in volumes.values()}
        self.classes = {str(_meta(r).get("name")): r for r in classes.values()}
        self.nodes = nodes
        self.users: dict[str, set[str]] = defaultdict(set)
        self.limits: dict[str, dict[str, int]] = {}
        """Node -> CSI driver -> volumes it may attach."""
        for raw in (csi_nodes or {}).values():
            found: dict[str, int] = {}
            for driver in (raw.get("spec") or {}).get("drivers") or ():
                count = (driver.get("allocatable") or {}).get("count")
                if isinstance(count, int):
                    found[str(driver.get("name"))] = count
            if found:
                self.limits[str(_meta(raw).get("name"))] = found
        self.attached: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        """Node -> CSI driver -> unique volumes its pods use."""
        for pod in pods:
            if pod.terminal:
                continue
            for claim in pod.volumes.claims:
                self.users[f"{pod.namespace}/{claim}"].add(pod.key)
            if pod.node_name and pod.node_name in self.limits:
                for driver, handle in self._csi_volumes(pod):
                    self.attached[pod.node_name][driver].add(handle)
        self._node_terms: dict[str, tuple[SelectorTerm, ...] | None] = {}

    # -- reading ------------------------------------------------------------------
    def class_of(self, claim: Raw) -> Raw | None:
        name = (claim.get("spec") or {}).get("storageClassName")
        if name is None:  # admission normally sets it; the default class otherwise
            return next((c for c in self.classes.values()
                         if _meta(c).get("annotations", {}).get(DEFAULT_CLASS) == "true"), None)
        return self.classes.get(name) if name else None

    def waits_for_consumer(self, claim: Raw) -> bool:
        found = self.class_of(claim)
        return found is not None and found.get("volumeBindingMode") == "WaitForFirstConsumer"

    @staticmethod
    def bound(claim: Raw) -> bool:
        return bool((claim.get("spec") or {}).get("volumeName"))

    def volume_terms(self, volume: Raw) -> tuple[SelectorTerm, ...] | None:
        """A volume's node affinity as node selector terms (None: any node), with its
        zone labels (VolumeZone) as one more requirement."""
        name = str(_meta(volume).get("name"))
        if name in self._node_terms:
            return self._node_terms[name]
        required = (((volume.get("spec") or {}).get("nodeAffinity") or {})
                    .get("required") or {})
        terms = parse_node_terms(f"PersistentVolume {name}", "spec.nodeAffinity.required",
                                 required.get("nodeSelectorTerms")) or None
        labels = _meta(volume).get("labels") or {}
        zone = tuple(Requirement(key, "In", tuple(str(labels[key]).split("__")))
                     for key in ZONE_LABELS if key in labels)
        if zone:
            terms = tuple(SelectorTerm(t.requirements + zone) for t in terms) if terms \
                else (SelectorTerm(zone),)
        self._node_terms[name] = terms
        return terms

    def _matches(self, claim: Raw, volume: Raw) -> bool:
        """kube's FindMatchingVolume, for a claim waiting for its first consumer."""
        spec, vspec = claim.get("spec") or {}, volume.get("spec") or {}
        meta = _meta(claim)
        ref = vspec.get("claimRef")
        if ref and (ref.get("namespace"), ref.get("name")) != (meta.get("namespace"),
                                                                meta.get("name")):
            return False
        if not ref and (volume.get("status") or {}).get("phase") not in (None, "Available"):
            return False
        if spec.get("volumeName") and spec["volumeName"] != _meta(volume).get("name"):
            return False
        wanted_class = spec.get("storageClassName") or ""
        if (vspec.get("storageClassName") or "") != wanted_class:
            return False
        if (vspec.get("volumeMode") or "Filesystem") != (spec.get("volumeMode") or
                                                          "Filesystem"):
            return False
        if not set(spec.get("accessModes") or ()) <= set(vspec.get("accessModes") or ()):
            return False
        want = _storage(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        if _storage((vspec.get("capacity") or {}).get("storage")) < want:
            return False
        selector = parse_label_selector("PersistentVolumeClaim", "spec.selector",
                                        spec.get("selector"))
        return selector is None or selector.matches(_meta(volume).get("labels") or {})

    def candidates(self, claim: Raw) -> list[Raw]:
        return sorted((v for v in self.volumes.values() if self._matches(claim, v)),
                      key=lambda v: str(_meta(v).get("name")))

    def _csi_volumes(self, pod: PodRecord) -> list[tuple[str, str]]:
        """(driver, unique volume) of each CSI volume of the pod's claims: the bound
        volume's driver and handle, or, unbound, the class's provisioner and the claim."""
        out = []
        for name in pod.volumes.claims:
            claim = self.claims.get(f"{pod.namespace}/{name}")
            if claim is None:
                continue
            if self.bound(claim):
                volume = self.volumes.get(str(claim["spec"]["volumeName"]))
                csi = ((volume or {}).get("spec") or {}).get("csi") or {}
                if csi.get("driver"):
                    out.append((str(csi["driver"]), str(csi.get("volumeHandle"))))
                continue
            found = self.class_of(claim)
            if found is not None and found.get("provisioner") not in (None, NO_PROVISIONER):
                out.append((str(found["provisioner"]), f"{pod.namespace}/{name}"))
        return out

    def _limit_rule(self, pod: PodRecord) -> NodeRule | None:
        wanted: dict[str, int] = defaultdict(int)
        for driver, _ in self._csi_volumes(pod):
            wanted[driver] += 1
        if not wanted or not self.limits:
            return None
        rooms = []
        for node, drivers in self.limits.items():
            room = min(((drivers[d] - len(self.attached[node][d])) // k
                        for d, k in wanted.items() if d in drivers), default=None)
            if room is not None:
                rooms.append((node, max(room, 0)))
        if not rooms:
            return None
        return NodeRule(Exclusion(ExclusionCode.VOLUME_LIMIT), limits=tuple(sorted(rooms)),
                        unlisted=None)

    # -- what a pod's claims ask of nodes --------------------------------------------
    def rules_for(self, pod: PodRecord) -> tuple[tuple[NodeRule, ...], tuple[Exclusion, ...]]:
        rules: list[NodeRule] = []
        refusals: list[Exclusion] = []
        for name in pod.volumes.claims:
            key = f"{pod.namespace}/{name}"
            claim = self.claims.get(key)
            if claim is None:
                refusals.append(Exclusion(ExclusionCode.CLAIM_NOT_FOUND, name))
                continue
            if _meta(claim).get("deletionTimestamp"):
                refusals.append(Exclusion(ExclusionCode.CLAIM_DELETING, name))
                continue
            modes = (claim.get("spec") or {}).get("accessModes") or ()
            if "ReadWriteOncePod" in modes and self.users.get(key, set()) - {pod.key}:
                refusals.append(Exclusion(ExclusionCode.CLAIM_IN_USE))
                continue
            if self.bound(claim):
                volume = self.volumes.get(str(claim["spec"]["volumeName"]))
                if volume is None:
                    refusals.append(Exclusion(ExclusionCode.CLAIM_LOST))
                    continue
                terms = self.volume_terms(volume)
                if terms is not None:
                    rules.append(NodeRule(Exclusion(ExclusionCode.VOLUME_NODE_AFFINITY), terms))
                continue
            if not self.waits_for_consumer(claim):
                refusals.append(Exclusion(ExclusionCode.UNBOUND_IMMEDIATE_CLAIM))
                continue
            rules.append(self._first_consumer_rule(claim))
        limit = self._limit_rule(pod) if not refusals else None
        if limit is not None:
            rules.append(limit)
        return tuple(rules), tuple(dict.fromkeys(refusals))

    def _first_consumer_rule(self, claim: Raw) -> NodeRule:
        reason = Exclusion(ExclusionCode.VOLUME_UNAVAILABLE)
        found = self.class_of(claim)
        static = self.candidates(claim)
        if found is not None and found.get("provisioner") not in (None, NO_PROVISIONER):
            allowed = []
            for topology in found.get("allowedTopologies") or ():
                reqs = tuple(Requirement(str(e.get("key")), "In",
                                         tuple(str(v) for v in e.get("values") or ()))
                             for e in (topology or {}).get("matchLabelExpressions") or ())
                if reqs:
                    allowed.append(SelectorTerm(reqs))
            if not allowed:
                return NodeRule(reason)  # provisionable anywhere
            for volume in static:
                allowed.extend(self.volume_terms(volume) or ())
            return NodeRule(reason, tuple(allowed))
        counts: dict[str, int] = defaultdict(int)
        for volume in static:
            terms = self.volume_terms(volume)
            for node in self.nodes:
                if terms is None or any_term(terms, node.labels, node.name):
                    counts[node.name] += 1
        return NodeRule(reason, limits=tuple(sorted(counts.items())))

    # -- settling claims for their first consumer ------------------------------------
    def actions(self, placements: Sequence[tuple[PodRecord, str]]) -> list[VolumeAction]:
        """The writes that give each placed pod's waiting claims their volume on the
        chosen node: a free matching static volume there, else provisioning."""
        taken: set[str] = set()
        out = []
        for pod, node_name in placements:
            node = next((n for n in self.nodes if n.name == node_name), None)
            for name in pod.volumes.claims:
                claim = self.claims.get(f"{pod.namespace}/{name}")
                if claim is None or self.bound(claim) or not self.waits_for_consumer(claim):
                    continue
                meta = _meta(claim)
                if (meta.get("annotations") or {}).get(SELECTED_NODE) == node_name:
                    continue  # already asked for, on this node
                volume = next((v for v in self.candidates(claim)
                               if str(_meta(v).get("name")) not in taken and node is not None
                               and ((terms := self.volume_terms(v)) is None
                                    or any_term(terms, node.labels, node.name))), None)
                name_of = str(_meta(volume).get("name")) if volume is not None else ""
                if name_of:
                    taken.add(name_of)
                out.append(VolumeAction(pod.namespace, name, str(meta.get("uid") or ""),
                                        node_name, name_of))
        return out

    def claims_bound(self, pods: Iterable[PodRecord]) -> bool:
        return all(self.bound(self.claims[f"{pod.namespace}/{name}"])
                   for pod in pods for name in pod.volumes.claims
                   if f"{pod.namespace}/{name}" in self.claims)


def view_from(objects: Mapping[Any, Mapping[str, Raw]], pods: Iterable[PodRecord],
              nodes: Sequence[NodeRecord]) -> VolumeView:
    """From the cache's watched objects (PVCs, PVs, StorageClasses by resource)."""
    return VolumeView(objects.get(PVCS, {}), objects.get(PVS, {}),
                      objects.get(STORAGE_CLASSES, {}), pods, nodes, objects.get(CSI_NODES, {}))
