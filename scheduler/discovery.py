"""Gang discovery (DESIGN §3): which pending pods of our scheduler form which gang.

- a pod labelled `scheduling.x-k8s.io/pod-group: NAME` belongs to PodGroup NAME;
- otherwise a pod owned by a StatefulSet or Job that requests an accelerator belongs to
  the gang named after its owner (minMember = replicas / parallelism);
- everything else (CPU-only pods, DaemonSet pods) takes the per-pod path.
A gang whose spec is malformed is reported with the field named, never placed.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.cache import ClusterCache
from scheduler.errors import ApiError
from scheduler.events import ObjectRef
from scheduler.gangs import POD_GROUP_LABEL, GangSpecError, pod_group_min_member, rank_of
from scheduler.kube import KubeClient, api_path
from topology.records import PodRecord

OWNER_KINDS = {"StatefulSet": ("apps", "statefulsets", "replicas"),
               "Job": ("batch", "jobs", "parallelism")}


@dataclass(frozen=True)
class Gang:
    key: str
    ref: ObjectRef
    pending: tuple[PodRecord, ...]
    bound: int
    min_member: int
    annotations: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    timeout_s: float | None = None
    peers: tuple[tuple[int, str], ...] = ()
    """(rank, node) of members bound in the API or assumed: replacements go next to
    them."""

    @property
    def needed(self) -> int:
        """Pending members required before placement may start."""
        return max(1, self.min_member - self.bound)

    @property
    def ready(self) -> bool:
        return self.error is None and len(self.pending) >= self.needed

    @property
    def priority(self) -> int:
        return max((p.priority for p in self.pending), default=0)

    @property
    def created(self) -> str:
        return min((p.created for p in self.pending), default="")


class OwnerLookup:
    """StatefulSet replicas / Job parallelism, read from the API and kept a few seconds."""

    def __init__(self, kube: KubeClient, ttl_s: float = 5.0) -> None:
        self.kube, self.ttl_s = kube, ttl_s
        self._seen: dict[str, tuple[float, Any]] = {}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = f"{kind}/{namespace}/{name}"
        hit = self._seen.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            cached: dict[str, Any] | None = hit[1]
            return cached
        group, plural, _ = OWNER_KINDS[kind]
        try:
            obj: dict[str, Any] | None = self.kube.get(api_path(group, "v1", plural, namespace,
                                                             name))
        except ApiError as exc:
            if exc.status != 404:
                raise
            obj = None
        self._seen[key] = (time.monotonic(), obj)
        return obj


def needs_gang(pod: PodRecord, accelerators: tuple[str, ...]) -> bool:
    if POD_GROUP_LABEL in pod.labels:
        return True
    if pod.owner is None or pod.owner.kind not in OWNER_KINDS:
        return False
    return any(pod.requests.get(resource, 0) > 0 for resource in accelerators)


def discover(cache: ClusterCache, scheduler_name: str, accelerators: tuple[str, ...],
             owners: OwnerLookup) -> tuple[list[Gang], list[PodRecord]]:
    pending = cache.pending(scheduler_name)
    groups: dict[tuple[str, str, str], list[PodRecord]] = defaultdict(list)
    singles = []
    for pod in pending:
        if not needs_gang(pod, accelerators):
            singles.append(pod)
        elif POD_GROUP_LABEL in pod.labels:
            groups["PodGroup", pod.namespace, pod.labels[POD_GROUP_LABEL]].append(pod)
        else:
            assert pod.owner is not None
            groups[pod.owner.kind, pod.namespace, pod.owner.name].append(pod)
    with cache.lock:
        all_pods = list(cache.pods.values())
        pod_groups = dict(cache.pod_groups)
        assumed = {key: entry.node for key, entry in cache.assumed.items()}
    # Bound means bound in the API or assumed by us (its binding not yet watched); one
    # pass over all pods, not one per gang.
    bound: Counter[tuple[str, str, str]] = Counter()
    placed: dict[tuple[str, str, str], list[PodRecord]] = defaultdict(list)
    for pod in all_pods:
        # A terminating member is on its way out: it is neither a member the gang can
        # count on nor a peer to place replacements next to.
        if not pod.terminal and not pod.deleting and (pod.node_name or pod.key in assumed):
            keys = []
            if POD_GROUP_LABEL in pod.labels:
                keys.append(("PodGroup", pod.namespace, pod.labels[POD_GROUP_LABEL]))
            if pod.owner is not None and pod.owner.kind in OWNER_KINDS:
                keys.append((pod.owner.kind, pod.namespace, pod.owner.name))
            for key in keys:
                bound[key] += 1
                if key in groups:
                    placed[key].append(pod)
    gangs = [replace(_gang(kind, namespace, name, members, bound[kind, namespace, name],
                           pod_groups, owners),
                     peers=_peers(placed[kind, namespace, name], assumed))
             for (kind, namespace, name), members in groups.items()]
    return gangs, singles


def _peers(pods: list[PodRecord], assumed: dict[str, str]) -> tuple[tuple[int, str], ...]:
    """(rank, node) of the running members, bound or assumed (bind sent, not yet seen)."""
    out, unranked = [], 1 << 40
    for pod in sorted(pods, key=lambda p: p.name):
        try:
            rank = rank_of(pod)
        except GangSpecError:
            rank = None
        if rank is None:
            rank, unranked = unranked, unranked + 1
        out.append((rank, pod.node_name or assumed.get(pod.key, "")))
    return tuple(out)


def _gang(kind: str, namespace: str, name: str, members: list[PodRecord], bound: int,
          pod_groups: dict[str, Any], owners: OwnerLookup) -> Gang:
    key = f"{namespace}/{name}"
    if kind == "PodGroup":
        raw = pod_groups.get(key)
        ref = ObjectRef("PodGroup", namespace, name,
                        str(((raw or {}).get("metadata") or {}).get("uid", "")),
                        "scheduling.x-k8s.io/v1alpha1")
        if raw is None:
            return Gang(key, ref, tuple(members), bound, len(members) + bound,
                        error=f"PodGroup {key} not found (pods carry {POD_GROUP_LABEL}={name})")
        try:
            min_member = pod_group_min_member(raw)
        except GangSpecError as exc:
            return Gang(key, ref, tuple(members), bound, 1, error=str(exc))
        annotations = dict((raw.get("metadata") or {}).get("annotations") or {})
        timeout = (raw.get("spec") or {}).get("scheduleTimeoutSeconds")
        if timeout is not None and (not isinstance(timeout, int) or timeout < 1):
            return Gang(key, ref, tuple(members), bound, min_member, annotations,
                        error=f"PodGroup {key}: field spec.scheduleTimeoutSeconds: expected an "
                              f"integer >= 1, got {timeout!r}")
        return Gang(key, ref, tuple(members), bound, min_member, annotations,
                    timeout_s=float(timeout) if timeout else None)
    owner = members[0].owner
    ref = ObjectRef(kind, namespace, name, owner.uid if owner else "",
                    owner.api_version if owner else "")
    obj = owners.get(kind, namespace, name)
    _, _, size_field = OWNER_KINDS[kind]
    size = ((obj or {}).get("spec") or {}).get(size_field, 1) if obj else len(members) + bound
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return Gang(key, ref, tuple(members), bound, 1,
                    error=f"{kind} {key}: field spec.{size_field}: expected an integer >= 1, "
                          f"got {size!r}")
    return Gang(key, ref, tuple(members), bound, size)
