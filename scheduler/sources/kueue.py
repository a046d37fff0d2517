"""Kueue's plain-pod groups: pods labelled `kueue.x-k8s.io/pod-group-name` with the
annotation `kueue.x-k8s.io/pod-group-total-count` (the group's size, and minMember).
Ranks come from the label `kueue.x-k8s.io/pod-group-pod-index`, or the label the
annotation `kueue.x-k8s.io/pod-group-pod-index-label` names. Kueue tracks the group as a
Workload of the group's name: Events about the gang go there."""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import KUEUE_WORKLOADS, ObjectRef
from scheduler.gang import GangKey, GangSpec
from scheduler.sources.base import (
    GangSpecError,
    ObjectLookup,
    Raw,
    label_int,
    positive_int,
    read_constraints,
)
from topology.records import PodRecord

GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
TOTAL = "kueue.x-k8s.io/pod-group-total-count"
INDEX_LABEL = "kueue.x-k8s.io/pod-group-pod-index"
INDEX_LABEL_NAME = "kueue.x-k8s.io/pod-group-pod-index-label"
KIND = "PodGroup.kueue.x-k8s.io"


class KueueSource:
    name = "Kueue pod group"

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        group = pod.labels.get(GROUP_LABEL)
        return GangKey(KIND, pod.namespace, group) if group else None

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        return label_int(pod, pod.annotations.get(INDEX_LABEL_NAME) or INDEX_LABEL)

    def subgroup(self, pod: PodRecord) -> str | None:
        return None

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        ref = ObjectRef("Workload", key.namespace, key.name, "", KUEUE_WORKLOADS.api_version)
        first = min(members, key=lambda p: p.name) if members else None
        constraints = read_constraints([("Pod", first.annotations if first else {})])
        seen = len(members)
        totals = {p.annotations.get(TOTAL) for p in members}
        try:
            if len(totals) != 1 or None in totals:
                raise GangSpecError(f"pod group {key.namespace}/{key.name}",
                                    f"metadata.annotations[{TOTAL}]",
                                    "the same count on every member", sorted(map(str, totals)))
            raw_total = totals.pop()
            total = positive_int(f"pod group {key.namespace}/{key.name}",
                                 f"metadata.annotations[{TOTAL}]",
                                 int(raw_total) if raw_total and raw_total.isdigit()
                                 else raw_total)
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, constraints, error=str(exc))
        return GangSpec(ref, total, max(total, seen), constraints)

    def expand(self, obj: Raw) -> list[Raw] | None:
        return None
