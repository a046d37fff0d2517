"""The cluster cache: nodes, every unfinished pod (any scheduler), watched objects
(PodGroups), and the pods Phalanx has assumed but not yet seen bound.

It does no I/O: `scheduler.informers` feeds it from the API server's watches; unit tests
feed it records directly. Assumed pods, as in kube-scheduler's cache:

    Initial --assume--> Assumed --bind succeeded: finish_binding--> Bound --watch--> Added
                           |  \\--bind failed: forget--> Initial (back to the queue)
                           \\--no answer before the deadline: expire--> Initial

A Bound assumption never expires (kube-scheduler's assumed pods do not either since
durationToExpireAssumedPod became 0): the API server has the pod on that node, and only
the watch may say more. With a deadline, a watch lagging behind a loaded API server by
more than the TTL handed a bound pod's node to the next gang (found by the soak:
two 8-GPU pods on one node). A 409 naming the node the pod is already bound to is
the same knowledge and ends the same way (`settle_binds`).

An assumed pod counts against its node at once, so the next cycle cannot hand the same
room to another gang; a pod the watch shows bound is never forgotten.

`snapshot()` is the only way placement sees the cache: an immutable TopologySnapshot.
The domain tree is rebuilt only when a node changed (its generation moved). What bound
pods use per node is kept up to date event by event (a fleet has a million pods: summing
them for every snapshot would cost seconds per cycle).

Pods and nodes arrive from the watches as WirePods and WireNodes
(`topology.records.PodWire`, `NodeWire`: only the fields placement reads, decoded
straight from the API server's bytes) or, from tests and files, as plain dicts; both
become the same records.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from gcpause import gc_paused
from kube.resources import NAMESPACES, Resource
from scheduler.collaborators import BindResult
from topology.presets import Preset
from topology.records import (
    NodeRecord,
    NodeWire,
    PodRecord,
    PodWire,
    RecordError,
    WireNode,
    WirePod,
)
from topology.snapshot import (
    DomainTree,
    Occupants,
    Placed,
    TopologySnapshot,
    build_tree,
    snapshot_of,
)

Raw = dict[str, Any]


class Change(Enum):
    """What a cache update may mean for waiting gangs."""

    NODES = "nodes"
    """Nodes added, removed or changed: capacity and topology may differ."""
    FREED = "freed"
    """Room given back: a pod went away or finished, an assumption was dropped."""
    PODS = "pods"
    """Pods came or changed: new members, or others' pods bound."""
    OBJECTS = "objects"
    """A watched object (a PodGroup) changed."""


@dataclass(frozen=True)
class BadPod:
    """A pod whose spec Phalanx cannot read: never placed, reported by name instead."""

    namespace: str
    name: str
    uid: str
    scheduler_name: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Assumed:
    pod: PodRecord
    node: str
    deadline: float


@dataclass(frozen=True)
class Hold:
    """Room kept for members a gang's controller has not created yet (planned pods, each
    on the node its gang's placement chose), until `deadline`."""

    entries: tuple[tuple[PodRecord, str], ...]
    deadline: float


class ClusterCache:
    def __init__(self, preset: Preset, *, assume_ttl_s: float = 30.0,
                 on_change: Callable[[Change], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.preset, self.assume_ttl_s, self.clock = preset, assume_ttl_s, clock
        self.on_change = on_change or (lambda change: None)
        self.lock = threading.RLock()
        self.nodes: dict[str, NodeRecord] = {}
        self.pods: dict[str, PodRecord] = {}
        self.objects: dict[Resource, dict[str, Raw]] = {}
        """Watched objects by resource, then namespace/name."""
        self.assumed: dict[str, Assumed] = {}
        self.holds: dict[str, Hold] = {}
        """Gang key -> the room held for its members still to be created."""
        self.finished: dict[str, PodRecord] = {}
        """Pods that ran to completion (Succeeded), from a watch of their own: they still
        count toward their gang's minMember (a Job's pods finish while others of its
        gang may still wait). The unfinished-pods watch cannot tell them: a pod leaving a
        field-selected watch is reported DELETED with its *previous* state (the API
        server's cacher, cache_watcher.go), exactly as a deleted one. The cycle forgets
        those no gang with unfinished members needs (`forget_finished`)."""
        self.bad_objects: dict[str, str] = {}
        """Nodes that could not be parsed, by kind/name: never fatal."""
        self.bad_pods: dict[str, BadPod] = {}
        """Pods that could not be parsed, by namespace/name: reported to their owners."""
        self.node_generation = 0
        self.object_generation: dict[Resource, int] = {}
        """Per watched resource, how often its objects changed."""
        self.freed = 0
        """Counts room given back, so a gang that did not fit knows when to look again."""
        self._tree: tuple[int, DomainTree] | None = None
        self.node_wire = NodeWire()
        """Decodes the node watch's bytes (only what placement reads) and parses nodes."""
        self.pod_wire = PodWire()
        """Decodes the pod watch's bytes and parses pods (shared parts remembered)."""
        self.finished_wire = PodWire()
        """The same for the succeeded-pods watch (its own thread: nothing shared). Each
        finished pod is read about once: what it alone used is forgotten at once."""
        self._bound: dict[str, tuple[str, PodRecord]] = {}
        """Pod key -> (node, pod) of every pod that consumes capacity (bound, unfinished)."""
        self._bound_usage: dict[str, dict[str, int]] = {}
        """Node -> the summed requests of its bound unfinished pods."""
        self._nominated: dict[str, PodRecord] = {}
        """Unbound unfinished pods a preemption nominated for a node."""
        self._rows: Mapping[str, int] | None = None
        """The current domain tree's node -> row, once a snapshot built it: from then on
        the bound pods' snapshot entries below are kept event by event too."""
        self._entries: dict[str, Placed] = {}
        """Pod key -> (row, pod) of the bound pods on nodes of the tree."""
        self._with_anti: dict[str, Placed] = {}
        """Those of them with required anti-affinity (Occupants.with_anti_affinity)."""
        self._with_ports: dict[str, Placed] = {}
        """Those of them with host ports (Occupants.with_host_ports)."""

    # -- updates, as a watch delivers them --------------------------------------------
    def _parse(self, kind: str, raw: Any, parse: Callable[[Any], Any]) -> Any | None:
        try:
            record = parse(raw)
        except RecordError as exc:
            namespace, name, uid, scheduler_name = _identity(raw)
            if kind == "pod":
                self.bad_pods[f"{namespace}/{name}"] = BadPod(namespace, name, uid,
                                                              scheduler_name, str(exc))
            else:
                self.bad_objects[f"{kind}/{namespace}/{name}"] = str(exc)
            return None
        if kind == "pod" and self.bad_pods:  # (a key string per pod otherwise: 1M at start)
            self.bad_pods.pop(record.key, None)
        return record

    def _parse_all(self, kind: str, items: list[Any], parse: Callable[[Any], Any]) -> list[Any]:
        with gc_paused():
            records = [self._parse(kind, item, parse) for item in items]
        return [r for r in records if r is not None]

    def parse_nodes(self, items: list[Raw | WireNode]) -> list[NodeRecord]:
        current = self.nodes  # as for pods (below)
        return [_cached_if_equal(current.get(r.name), r)
                for r in self._parse_all("node", items, self.node_wire.record)]

    def install_nodes(self, records: list[NodeRecord]) -> None:
        with self.lock:
            self.nodes = {r.name: r for r in records}
            self.node_generation += 1
        self.on_change(Change.NODES)

    def node_event(self, kind: str, raw: Raw | WireNode) -> None:
        with self.lock:
            if kind == "DELETED":
                self.nodes.pop(self.node_wire.name(raw), None)
            else:
                record = self._parse("node", raw, self.node_wire.record)
                if record is None:
                    return
                if self.nodes.get(record.name) == record:
                    return  # heartbeat: nothing placement sees changed
                self.nodes[record.name] = record
            self.node_generation += 1
        self.on_change(Change.NODES)

    def parse_pods(self, items: list[Raw | WirePod]) -> list[PodRecord]:
        # A re-list (after an API server restart, or a watch too far behind) returns
        # mostly pods the cache holds unchanged: the new list keeps the cached records,
        # so the cache is not held twice until install_pods swaps them (each page's fresh
        # records are garbage at once).
        current = self.pods
        return [_cached_if_equal(current.get(r.key), r)
                for r in self._parse_all("pod", items, self.pod_wire.record)]

    def install_pods(self, records: list[PodRecord]) -> None:
        with self.lock:
            relisted = bool(self.pods)
            self.pods = {r.key: r for r in records}
            if relisted:  # what pods deleted while no watch ran used: no DELETED names them
                self.pod_wire.sweep(records)
            self.bad_pods = {k: b for k, b in self.bad_pods.items() if k not in self.pods}
            self._bound, self._bound_usage, self._nominated = {}, {}, {}
            self._entries, self._with_anti, self._with_ports = {}, {}, {}
            for key, record in self.pods.items():  # one key string per pod, shared
                self._index(key, None, record)
            self._confirm_assumed()
            self.freed += 1
        self.on_change(Change.FREED)

    def pod_event(self, kind: str, raw: Raw | WirePod) -> None:
        key = raw.key() if isinstance(raw, WirePod) else _key(raw)
        with self.lock:
            if kind == "DELETED":
                self._index(key, self.pods.pop(key, None), None)
                self.assumed.pop(key, None)
                self.bad_pods.pop(key, None)
                self.freed += 1
                self.pod_wire.forget(raw)
            else:
                record = self._parse("pod", raw, self.pod_wire.record)
                if record is None:
                    return
                self.put_pod(record)
                self.pod_wire.tidy(self.pods.values())
        # A pod gone (deleted, or finished: it leaves the unfinished-pods watch) frees room.
        self.on_change(Change.FREED if kind == "DELETED" else Change.PODS)

    def _finished_record(self, raw: Raw | WirePod) -> PodRecord | None:
        """A succeeded pod's record (None: unreadable, or not Succeeded): it counts or it
        does not; its owner is told nothing (it ran)."""
        try:
            record: PodRecord | None = self.finished_wire.record(raw)
        except RecordError:
            record = None
        self.finished_wire.forget(raw)
        return record if record is not None and record.phase == "Succeeded" else None

    def parse_finished(self, items: list[Raw | WirePod]) -> list[PodRecord]:
        with gc_paused():
            records = [self._finished_record(item) for item in items]
        return [r for r in records if r is not None]

    def install_finished(self, records: list[PodRecord]) -> None:
        """The succeeded-pods watch's list (every Succeeded pod of the cluster: the next
        cycle keeps those whose gang still waits)."""
        with self.lock:
            relisted = bool(self.finished)
            self.finished = {r.key: r for r in records}
            if relisted:
                self.finished_wire.sweep(records)
        self.on_change(Change.PODS)

    def finished_event(self, kind: str, raw: Raw | WirePod) -> None:
        """One event of the succeeded-pods watch: ADDED when a pod succeeds, DELETED when
        a succeeded pod is deleted (or, never in practice, leaves Succeeded)."""
        key = raw.key() if isinstance(raw, WirePod) else _key(raw)
        record = None if kind == "DELETED" else self._finished_record(raw)
        with self.lock:
            if record is not None:
                self.finished[key] = record
            else:
                self.finished.pop(key, None)
            self.finished_wire.tidy(self.finished.values())
        # A member that finished may be what its gang's waiting members were waiting for.
        self.on_change(Change.PODS)

    def put_pod(self, record: PodRecord) -> None:
        key = record.key
        with self.lock:
            self._index(key, self.pods.get(key), record)
            self.pods[key] = record
            if record.node_name or record.terminal:
                # Only this pod's assumption can end here; expired ones are swept when
                # usage is read. (Sweeping all on every event cost O(assumed) per event:
                # ~3M steps while a 1,024-pod gang was bound.)
                self.assumed.pop(key, None)

    def _index(self, key: str, old: PodRecord | None, new: PodRecord | None) -> None:
        """Moves a pod's share of its node's usage from `old` to `new` (either None)."""
        if old is not None and old.consumes_capacity:
            del self._bound[key]
            self._charge(old.node_name, old.requests, -1)
            self._entries.pop(key, None)
            self._with_anti.pop(key, None)
            self._with_ports.pop(key, None)
        if new is not None and new.consumes_capacity:
            self._bound[key] = (new.node_name, new)
            self._charge(new.node_name, new.requests, 1)
            if self._rows is not None:
                self._enter(key, new.node_name, new)
        self._nominated.pop(key, None)
        if new is not None and new.nominated_node and not new.node_name and not new.terminal:
            self._nominated[key] = new

    def _enter(self, key: str, node: str, pod: PodRecord) -> None:
        row = self._rows.get(node) if self._rows is not None else None
        if row is None:
            return  # a node the tree does not hold: not in the snapshot (as snapshot_of)
        entry = (row, pod)
        self._entries[key] = entry
        # The same two rules as topology.snapshot.Occupants.of.
        if pod.inter_pod.anti_affinity:
            self._with_anti[key] = entry
        if pod.inter_pod.host_ports:
            self._with_ports[key] = entry

    def _charge(self, node: str, requests: dict[str, int], sign: int) -> None:
        slot = self._bound_usage.setdefault(node, {})
        for name, amount in requests.items():
            total = slot.get(name, 0) + sign * amount
            if total:
                slot[name] = total
            else:
                slot.pop(name, None)  # as if summed afresh: no resource at 0
        if not slot:
            del self._bound_usage[node]

    def install_objects(self, resource: Resource, items: list[Raw]) -> None:
        with self.lock:
            self.objects[resource] = {_key(item): item for item in items}
            self.object_generation[resource] = self.object_generation.get(resource, 0) + 1
        self.on_change(Change.OBJECTS)

    def object_event(self, resource: Resource, kind: str, raw: Raw) -> None:
        with self.lock:
            store = self.objects.setdefault(resource, {})
            if kind == "DELETED":
                store.pop(_key(raw), None)
            else:
                store[_key(raw)] = raw
            self.object_generation[resource] = self.object_generation.get(resource, 0) + 1
        self.on_change(Change.OBJECTS)

    def objects_of(self, resource: Resource) -> dict[str, Raw]:
        with self.lock:
            return dict(self.objects.get(resource, {}))

    def generation_of(self, resources: tuple[Resource, ...]) -> int:
        with self.lock:
            return sum(self.object_generation.get(r, 0) for r in resources)

    # -- assume cache -----------------------------------------------------------------
    def assume(self, pod: PodRecord, node: str) -> None:
        with self.lock:
            self.assumed[pod.key] = Assumed(pod, node, self.clock() + self.assume_ttl_s)

    def finish_binding(self, key: str, node: str) -> None:
        """The API server has the pod on `node`: its room stays taken until the watch shows
        it (bound, or gone), however far the watch lags."""
        with self.lock:
            current = self.pods.get(key)
            if current is None or current.node_name or current.terminal:
                self.assumed.pop(key, None)  # the watch knows already, or it is gone
                return
            self.assumed[key] = Assumed(current, node, math.inf)

    def settle_binds(self, results: Iterable[BindResult]) -> None:
        """After binds: a bound pod keeps its room for good (`finish_binding`), also when a
        409 says it is bound to another node than asked (there, then); any other failure,
        and a bind not sent, gives the room back."""
        for result in results:
            if result.ok:
                self.finish_binding(result.pod, result.node)
            elif result.bound_to:
                self.finish_binding(result.pod, result.bound_to)
            else:
                self.forget(result.pod)

    def forget(self, key: str) -> None:
        """A bind that failed: the pod's room is free again (never for a bound pod)."""
        with self.lock:
            current = self.pods.get(key)
            if (current is None or not current.node_name) and key in self.assumed:
                del self.assumed[key]
                self.freed += 1

    # -- held room ----------------------------------------------------------------------
    def hold(self, owner: str, entries: tuple[tuple[PodRecord, str], ...],
             deadline: float) -> None:
        """Keeps room for a gang's planned members (replacing what it held before); no
        entries releases it."""
        with self.lock:
            if entries:
                self.holds[owner] = Hold(entries, deadline)
            elif self.holds.pop(owner, None) is not None:
                self.freed += 1

    def held(self, owner: str) -> Hold | None:
        with self.lock:
            self._expire_holds()
            return self.holds.get(owner)

    def _expire_holds(self) -> None:
        now = self.clock()
        for owner in [o for o, h in self.holds.items() if h.deadline < now]:
            del self.holds[owner]
            self.freed += 1

    def _confirm_assumed(self) -> None:
        now = self.clock()
        for key in list(self.assumed):
            pod = self.pods.get(key)
            if pod is None or pod.node_name or self.assumed[key].deadline < now:
                del self.assumed[key]

    # -- reads ------------------------------------------------------------------------
    def unreadable(self, scheduler_name: str) -> list[BadPod]:
        with self.lock:
            return [b for b in self.bad_pods.values() if b.scheduler_name == scheduler_name]

    def watched(self, resource: Resource) -> bool:
        with self.lock:
            return resource in self.objects

    def get_object(self, resource: Resource, namespace: str, name: str) -> Raw | None:
        with self.lock:
            return self.objects.get(resource, {}).get(f"{namespace}/{name}")

    def finished_pods(self) -> list[PodRecord]:
        """Succeeded pods, except any the unfinished-pods watch still holds: the two
        watches are separate streams, and a pod counts once, as the cache last saw it
        unfinished, until that watch's DELETED arrives."""
        with self.lock:
            return [p for k, p in self.finished.items() if k not in self.pods]

    def forget_finished(self, offered: Iterable[PodRecord]) -> None:
        """Forgets these finished pods, offered by `finished_pods` and needed by no gang
        with unfinished members, unless a newer record replaced them since. Only what
        was offered: a success that arrived after the offer is for the next cycle to
        judge. (Pruning to "what discovery kept" forgot, unread, a success that arrived
        while discovery ran, or one whose DELETED had not come yet: members bound and
        finished were never counted again, and the rest of their gang waited for good —
        the soak's first two hours.)"""
        with self.lock:
            for pod in offered:
                if self.finished.get(pod.key) is pod:
                    del self.finished[pod.key]

    def all_pods(self) -> tuple[list[PodRecord], dict[str, str]]:
        """Every unfinished pod, and pod key -> node of each assumed pod, read together."""
        with self.lock:
            self._confirm_assumed()
            return list(self.pods.values()), {k: a.node for k, a in self.assumed.items()}

    def has_pod(self, key: str, uid: str) -> bool:
        """This very pod (not a namesake a controller recreated) exists, unfinished
        (terminating included)."""
        with self.lock:
            pod = self.pods.get(key)
            return pod is not None and pod.uid == uid

    def pod_node(self, key: str) -> str:
        """The node the API server shows the pod on ("" when unbound or unknown)."""
        with self.lock:
            pod = self.pods.get(key)
        return pod.node_name if pod is not None else ""

    def versions(self) -> tuple[int, int]:
        """(node generation, room freed so far): what a waiting gang's retry watches."""
        with self.lock:
            return self.node_generation, self.freed

    def placed(self, exclude: frozenset[str] = frozenset(),
               own_holds: str | None = None) -> list[tuple[str, PodRecord]]:
        """(node, pod) of every bound unfinished pod, every assumed pod, every pod a
        preemption nominated for a node (its room is held for it, as kube-scheduler holds
        it) and every held planned pod, except the pods in `exclude` (the gang being
        placed: its own nominations) and the room `own_holds` (that gang) holds."""
        with self.lock:
            return list(self._bound.values()) + self._unbound_placed(exclude, own_holds)

    def _unbound_placed(self, exclude: frozenset[str],
                        own_holds: str | None) -> list[tuple[str, PodRecord]]:
        """placed() less the bound pods: the few entries not kept in `_bound_usage`."""
        self._confirm_assumed()
        self._expire_holds()
        held = {pod.key for owner, hold in self.holds.items() for pod, _ in hold.entries}
        on_nodes = [(pod.nominated_node, pod) for key, pod in self._nominated.items()
                    # a preemptor's held room counts once
                    if key not in self.assumed and key not in exclude and key not in held]
        on_nodes += [(a.node, a.pod) for a in self.assumed.values()]
        on_nodes += [(node, pod) for owner, hold in self.holds.items()
                     if owner != own_holds for pod, node in hold.entries]
        return on_nodes

    def usage(self, placed: list[tuple[str, PodRecord]] | None = None
              ) -> dict[str, dict[str, int]]:
        """Requests of every bound unfinished pod plus every assumed pod, per node (of
        `placed` instead, when given)."""
        if placed is None:
            return self._usage_and_placed(frozenset(), None)[0]
        used: dict[str, dict[str, int]] = {}
        _add_usage(used, placed)
        return used

    def _usage_and_placed(self, exclude: frozenset[str], own_holds: str | None
                          ) -> tuple[dict[str, dict[str, int]], list[tuple[str, PodRecord]]]:
        """usage() and placed() read together: the bound pods' usage is copied from the
        running sums, only the few unbound entries are added up."""
        with self.lock:
            used = {node: dict(slot) for node, slot in self._bound_usage.items()}
            extra = self._unbound_placed(exclude, own_holds)
            placed = list(self._bound.values()) + extra
        _add_usage(used, extra)
        return used, placed

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        with self.lock:
            found = self.objects.get(NAMESPACES, {})
            return {(raw.get("metadata") or {}).get("name", ""):
                    dict((raw.get("metadata") or {}).get("labels") or {})
                    for raw in found.values()}

    def snapshot(self, exclude: frozenset[str] = frozenset(),
                 own_holds: str | None = None) -> TopologySnapshot:
        """`exclude`: pods whose nominated room is not held (the gang being placed);
        `own_holds`: the gang whose held room is its own to use.

        Bound pods' usage and snapshot entries are kept up to date by the event handlers,
        so a snapshot costs copying them (~0.1 s at a million pods), not reading every pod
        (~2 s): only the few assumed, nominated and held pods are added here."""
        with self.lock:
            generation = self.node_generation
            nodes = list(self.nodes.values())
        if self._tree is None or self._tree[0] != generation:
            self._tree = (generation, build_tree(nodes, self.preset))
        tree = self._tree[1]
        with self.lock:
            if self._rows is not tree.index:
                self._rows = tree.index
                self._entries, self._with_anti, self._with_ports = {}, {}, {}
                for key, (node, pod) in self._bound.items():
                    self._enter(key, node, pod)
            used = {node: dict(slot) for node, slot in self._bound_usage.items()}
            extra = self._unbound_placed(exclude, own_holds)
            base = tuple(self._entries.values())
            with_anti = tuple(self._with_anti.values())
            with_ports = tuple(self._with_ports.values())
        _add_usage(used, extra)
        # The few unbound entries through snapshot_of's own reading; the bound ones as kept.
        snap = snapshot_of(tree, used, extra, self.namespace_labels())
        more = snap.placed
        return dataclasses.replace(snap, placed=Occupants(
            base + more.base, (), with_anti + more.with_anti_affinity,
            with_ports + more.with_host_ports))


def _add_usage(used: dict[str, dict[str, int]], placed: list[tuple[str, PodRecord]]) -> None:
    for node, pod in placed:
        slot = used.setdefault(node, {})
        for name, amount in pod.requests.items():
            slot[name] = slot.get(name, 0) + amount


_Record = TypeVar("_Record", PodRecord, NodeRecord)


def _cached_if_equal(cached: _Record | None, fresh: _Record) -> _Record:
    return cached if cached is not None and cached == fresh else fresh


def _identity(raw: Raw | WirePod | WireNode) -> tuple[str, str, str, str]:
    """(namespace, name, uid, schedulerName) of an object that could not be parsed."""
    if isinstance(raw, WireNode):
        return "default", str(raw.metadata.name), "", "default-scheduler"
    if isinstance(raw, WirePod):
        meta, spec = raw.metadata, raw.spec
        return (str((meta.namespace if meta else None) or "default"),
                str(meta.name if meta else None), str((meta.uid if meta else None) or ""),
                str((spec.schedulerName if spec else None) or "default-scheduler"))
    found = raw.get("metadata") or {}
    return (str(found.get("namespace") or "default"), str(found.get("name")),
            str(found.get("uid") or ""),
            str((raw.get("spec") or {}).get("schedulerName") or "default-scheduler"))


def _key(raw: Raw) -> str:
    meta = raw.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
