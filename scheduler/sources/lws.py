"""LeaderWorkerSet (`leaderworkerset.x-k8s.io/v1`): each group, a leader and its workers
(`leaderworkerset.sigs.k8s.io/name` + `group-index`), is one gang, named after its
leader pod (`<lws>-<group>`); N groups are N gangs, placed as they arrive.

Size: `spec.leaderWorkerTemplate.size`. Rank: `leaderworkerset.sigs.k8s.io/worker-index`
(the leader is 0).

`leaderworkerset.sigs.k8s.io/exclusive-topology: KEY`: the group inside one KEY domain (a
required level; on kubernetes.io/hostname, one node), and no other group in it (LWS's
webhook gives the leader the anti-affinity that keeps others out, which Phalanx checks
against the placed pods). `subgroup-exclusive-topology: KEY` with a subgroup size: each
sub-group (`subgroup-index`) is a slice, alone in its KEY domain.

Members created later: with exclusive-topology (or `startupPolicy: LeaderReady`) LWS
creates a group's workers only once its leader is bound (or ready), with a nodeSelector
for the leader's domain. minMember is then 1, the leader; the workers are planned with it
(from `workerTemplate`) and their room held until they arrive.
"""

from __future__ import annotations

from collections.abc import Sequence

from kube.resources import LEADER_WORKER_SETS, ObjectRef
from scheduler.gang import Constraint, ConstraintKind, GangKey, GangSpec, Planned, SubGroupSpec
from scheduler.sources.base import (
    GangSpecError,
    ObjectLookup,
    Raw,
    annotations_of,
    label_int,
    meta,
    name_and_namespace,
    not_found,
    pod_from_template,
    positive_int,
    read_constraints,
)
from topology.presets import HOSTNAME
from topology.records import PodRecord, pod_from_json

NAME = "leaderworkerset.sigs.k8s.io/name"
GROUP = "leaderworkerset.sigs.k8s.io/group-index"
WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_KEY = "leaderworkerset.sigs.k8s.io/group-key"
SUBGROUP = "leaderworkerset.sigs.k8s.io/subgroup-index"
EXCLUSIVE = "leaderworkerset.sigs.k8s.io/exclusive-topology"
SUBGROUP_EXCLUSIVE = "leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology"
KIND = "LeaderWorkerSet"


def subgroup_index(size: int, subgroup_size: int, worker: int) -> int:
    """LWS's rule: the leader (worker 0) is in sub-group 0; when the workers alone divide
    into whole sub-groups, the leader is an extra pod of the first."""
    if worker == 0:
        return 0
    if (size - 1) % subgroup_size == 0:
        return (worker - 1) // subgroup_size
    return worker // subgroup_size


class LeaderWorkerSetSource:
    name = "LeaderWorkerSet"

    def claim_reads_objects(self, pod: PodRecord) -> bool:
        return False

    def claim(self, pod: PodRecord, objects: ObjectLookup) -> GangKey | None:
        lws, group = pod.labels.get(NAME), pod.labels.get(GROUP)
        if not lws or group is None:
            return None
        return GangKey(KIND, pod.namespace, f"{lws}-{group}")

    def rank(self, pod: PodRecord, objects: ObjectLookup) -> int | None:
        return label_int(pod, WORKER)

    def subgroup(self, pod: PodRecord) -> str | None:
        index = pod.labels.get(SUBGROUP)
        if index is None or SUBGROUP_EXCLUSIVE not in pod.annotations:
            return None
        return f"{pod.labels.get(NAME)}-{pod.labels.get(GROUP)}-subgroup-{index}"

    def describe(self, key: GangKey, members: Sequence[PodRecord],
                 objects: ObjectLookup) -> GangSpec:
        lws = next((p.labels[NAME] for p in members if p.labels.get(NAME)), key.name)
        raw = objects.get(LEADER_WORKER_SETS, key.namespace, lws)
        ref = ObjectRef(KIND, key.namespace, lws, str(meta(raw).get("uid") or ""),
                        LEADER_WORKER_SETS.api_version)
        first = min(members, key=lambda p: p.name).annotations if members else {}
        annotations = annotations_of(raw)
        constraints = list(read_constraints([(KIND, annotations), ("Pod", first)]))
        seen = len(members)
        if raw is None:
            return GangSpec(ref, seen, seen, tuple(constraints),
                            waiting=not_found(KIND, key.namespace, lws))
        obj = f"{KIND} {key.namespace}/{lws}"
        version = str(meta(raw).get("generation") or "")
        spec = raw.get("spec") or {}
        template = spec.get("leaderWorkerTemplate") or {}
        try:
            size = positive_int(obj, "spec.leaderWorkerTemplate.size", template.get("size", 1))
            exclusive = annotations.get(EXCLUSIVE)
            if exclusive and exclusive != HOSTNAME:
                constraints = [c for c in constraints if c.kind is not ConstraintKind.REQUIRED]
                constraints.insert(0, Constraint(ConstraintKind.REQUIRED, exclusive,
                                                 EXCLUSIVE, KIND))
            subgroups = self._subgroups(obj, key, annotations, template, size)
        except GangSpecError as exc:
            return GangSpec(ref, 1, seen, tuple(constraints), error=str(exc),
                            version=version)
        leader_first = bool(exclusive) or spec.get("startupPolicy") == "LeaderReady"
        if not leader_first or size == 1:
            return GangSpec(ref, size, size, tuple(constraints), version=version,
                            subgroups=subgroups)
        later = self._workers_later(key, lws, raw, members, size, template, annotations)
        return GangSpec(ref, 1, size, tuple(constraints), version=version,
                        subgroups=subgroups, later=later)

    def _subgroups(self, obj: str, key: GangKey, annotations: dict[str, str],
                   template: Raw, size: int) -> dict[str, SubGroupSpec]:
        level = annotations.get(SUBGROUP_EXCLUSIVE)
        policy = template.get("subGroupPolicy") or {}
        if not level or not policy:
            return {}
        subgroup_size = positive_int(obj, "spec.leaderWorkerTemplate.subGroupPolicy."
                                     "subGroupSize", policy.get("subGroupSize"))
        if policy.get("subGroupPolicyType") == "LeaderExcluded":
            raise GangSpecError(obj, "spec.leaderWorkerTemplate.subGroupPolicy."
                                "subGroupPolicyType", f"LeaderWorker with {SUBGROUP_EXCLUSIVE}"
                                " (Phalanx places a group as slices only when its leader is in"
                                " one)", "LeaderExcluded")
        counts: dict[int, int] = {}
        for worker in range(size):
            index = subgroup_index(size, subgroup_size, worker)
            counts[index] = counts.get(index, 0) + 1
        return {f"{key.name}-subgroup-{i}": SubGroupSpec(level, n, True)
                for i, n in counts.items()}

    def _workers_later(self, key: GangKey, lws: str, raw: Raw, members: Sequence[PodRecord],
                       size: int, template: Raw, annotations: dict[str, str]
                       ) -> tuple[Planned, ...]:
        present = {p.labels.get(WORKER) for p in members}
        leader = next((p for p in members if p.labels.get(WORKER) == "0"), None)
        group = key.name.removeprefix(f"{lws}-")
        policy = template.get("subGroupPolicy") or {}
        out = []
        for worker in range(1, size):
            if str(worker) in present:
                continue
            labels = {NAME: lws, GROUP: group, WORKER: str(worker)}
            if leader is not None and GROUP_KEY in leader.labels:
                labels[GROUP_KEY] = leader.labels[GROUP_KEY]
            pod_annotations = {k: v for k, v in annotations.items()
                               if k in (EXCLUSIVE, SUBGROUP_EXCLUSIVE)}
            if policy.get("subGroupSize"):
                labels[SUBGROUP] = str(subgroup_index(size, int(policy["subGroupSize"]),
                                                      worker))
            raw_pod = pod_from_template(template.get("workerTemplate"),
                                        f"{KIND} {key.namespace}/{lws}",
                                        "spec.leaderWorkerTemplate.workerTemplate",
                                        name=f"{key.name}-{worker}", namespace=key.namespace,
                                        labels=labels, annotations=pod_annotations)
            pod = pod_from_json(raw_pod)
            out.append(Planned(pod, worker, self.subgroup(pod)))
        return tuple(out)

    def expand(self, obj: Raw) -> list[Raw] | None:
        """Group 0's pods (offline, one group is one gang): its leader from
        `leaderTemplate` (else `workerTemplate`) and its workers."""
        if obj.get("kind") != KIND:
            return None
        name, namespace = name_and_namespace(obj)
        template = (obj.get("spec") or {}).get("leaderWorkerTemplate") or {}
        where = f"{KIND} {namespace}/{name}"
        size = positive_int(where, "spec.leaderWorkerTemplate.size", template.get("size", 1))
        annotations = {k: v for k, v in annotations_of(obj).items()
                       if k in (EXCLUSIVE, SUBGROUP_EXCLUSIVE)}
        policy = template.get("subGroupPolicy") or {}
        pods = []
        for worker in range(size):
            labels = {NAME: name, GROUP: "0", WORKER: str(worker)}
            if policy.get("subGroupSize"):
                labels[SUBGROUP] = str(subgroup_index(
                    size, positive_int(where, "spec.leaderWorkerTemplate.subGroupPolicy."
                                       "subGroupSize", policy["subGroupSize"]), worker))
            leader = worker == 0 and bool(template.get("leaderTemplate"))
            source = template.get("leaderTemplate" if leader else "workerTemplate")
            pods.append(pod_from_template(source, where, "spec.leaderWorkerTemplate."
                                          f"{'leaderTemplate' if leader else 'workerTemplate'}",
                                          name=f"{name}-0" if worker == 0 else f"{name}-0-{worker}",
                                          namespace=namespace, labels=labels,
                                          annotations=annotations))
        return pods
