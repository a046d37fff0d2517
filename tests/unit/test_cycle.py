"""The scheduling cycle's decisions, with in-memory collaborators (Phalanx's own
interfaces: cache, lookup, binder, recorder, clock, leadership) and the real solver. What
the API server makes of the same decisions is tested in tests/integration."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from kube.resources import (
    JOBS,
    POD_GROUPS,
    PVCS,
    PVS,
    STATEFULSETS,
    STORAGE_CLASSES,
    ObjectRef,
    Resource,
)
from scheduler.api.views import explanation
from scheduler.cache import ClusterCache
from scheduler.collaborators import NOT_LEADER, BindResult, Leading
from scheduler.config import Config
from scheduler.cycle import BIND_BACKOFF_S, Scheduler
from scheduler.gang import GangKey
from scheduler.metrics import SchedulerMetrics
from scheduler.state import GangPhase
from solver.reasons import FitCode
from tests.unit.helpers import GPU, LEVELS, node
from topology.podrules import NO_VOLUMES, Volumes
from topology.presets import resolve_preset
from topology.records import OwnerRef, PodRecord

NS = "ml"


@dataclass
class Clock:
    now: float = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.8e9 + self.now


@dataclass
class Lookup:
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource.kind, namespace, name))

    def put(self, resource: Resource, name: str, spec: dict[str, Any], generation: int = 1
            ) -> None:
        self.objects[resource.kind, NS, name] = {
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                         "generation": generation}, "spec": spec}


@dataclass
class Recorder:
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(kind, name, reason, message)"""
    statuses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def event(self, ref: ObjectRef, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((ref.kind, ref.name, reason, message))

    def pod_group_status(self, ref: ObjectRef, status: dict[str, Any]) -> None:
        self.statuses.append((ref.name, status))

    def reasons(self, name: str) -> list[str]:
        return [reason for _, n, reason, _ in self.events if n == name]


@dataclass
class Binder:
    """Binds as the API server would, and shows the binding to the cache as the watch
    would (unless `watch` is off). `refuse(pod, node)` returns a status to fail with."""

    cache: ClusterCache
    allowed: Callable[[], bool]
    refuse: Callable[[str, str], int | None] = lambda pod, node: None
    watch: bool = True
    sent: list[tuple[str, str]] = field(default_factory=list)
    elsewhere: dict[str, str] = field(default_factory=dict)
    """Pod key -> the node the API server already has it on (its bind answers 409)."""

    def bind_all(self, placements: Sequence[tuple[str, str]]
                 ) -> tuple[list[BindResult], float]:
        results = []
        for key, node_name in placements:
            if not self.allowed():
                results.append(BindResult(key, node_name, False, NOT_LEADER, "not leader"))
                continue
            self.sent.append((key, node_name))
            if key in self.elsewhere:
                there = self.elsewhere[key]
                results.append(BindResult(key, node_name, False, 409,
                                          f"already bound to {there}", bound_to=there))
                continue
            status = self.refuse(key, node_name)
            if status is not None:
                results.append(BindResult(key, node_name, False, status, "Forbidden: denied"))
                continue
            results.append(BindResult(key, node_name, True, 201))
            if self.watch:
                self.cache.put_pod(replace(self.cache.pods[key], node_name=node_name))
        return results, 0.01


@dataclass
class VolumeWriter:
    actions: list[Any] = field(default_factory=list)

    def apply(self, actions: Sequence[Any]) -> list[str]:
        self.actions.extend(actions)
        return []


class World:
    """A scheduler over a small cluster: 2 zones x 2 blocks x 2 racks x 4 nodes."""

    def __init__(self, config: Config | None = None, evictor: Any = None) -> None:
        self.clock = Clock()
        self.cache = ClusterCache(resolve_preset(list(LEVELS)), clock=self.clock.monotonic)
        self.lookup = Lookup()
        self.recorder = Recorder()
        self.leading = Leading()
        self.binder = Binder(self.cache, self.leading.leading)
        self.metrics = SchedulerMetrics()
        self.config = config or Config(unschedulable_retry_s=30.0)
        self.volumes = VolumeWriter()
        self.scheduler = Scheduler(self.config, self.cache, self.lookup, self.binder,
                                   self.recorder, self.clock, self.leading, self.metrics,
                                   volume_writer=self.volumes, evictor=evictor)
        self.add_nodes(["z1", "z2"])

    def add_nodes(self, zones: list[str]) -> None:
        nodes = list(self.cache.nodes.values())
        for zone in zones:
            for block in ("b1", "b2"):
                for rack in ("r1", "r2"):
                    nodes += [node(f"{zone}-{block}-{rack}-n{i}", (zone, block, rack))
                              for i in range(4)]
        self.cache.install_nodes(nodes)

    def pods(self, owner: str, count: int, *, kind: str = "StatefulSet", start: int = 0,
             labels: dict[str, str] | None = None, gates: tuple[str, ...] = (),
             gpus: int = 8, claim: str = "", priority: int = 0,
             policy: str = "PreemptLowerPriority", uid: str = "") -> list[PodRecord]:
        out = []
        for i in range(start, start + count):
            index = "apps.kubernetes.io/pod-index" if kind == "StatefulSet" else \
                "batch.kubernetes.io/job-completion-index"
            pod = PodRecord(NS, f"{owner}-{i}", uid=f"u-{owner}-{i}{uid}", scheduler_name="phalanx",
                            requests={GPU: gpus, "pods": 1},
                            labels={index: str(i), **(labels or {})},
                            owner=OwnerRef(kind, owner, f"uid-{owner}", "apps/v1"),
                            created="2026-12-01T00:00:00Z", resource_version="1",
                            scheduling_gates=gates, priority=priority,
                            preemption_policy=policy,
                            volumes=Volumes((f"{claim}-{owner}-{i}",)) if claim else NO_VOLUMES)
            self.cache.put_pod(pod)
            out.append(pod)
        return out

    def cycle(self, times: int = 1) -> None:
        for _ in range(times):
            self.scheduler.cycle()

    def record(self, kind: str, name: str) -> Any:
        return self.scheduler.records[GangKey(kind, NS, name)]

    def bound(self, prefix: str) -> dict[str, str]:
        return {p.name: p.node_name for p in self.cache.pods.values()
                if p.name.startswith(prefix) and p.node_name}

    def solves(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value("phalanx_solve_seconds_count",
                                                       {"result": result})
        return value or 0.0


def test_gang_waits_for_min_member_then_binds_every_member_at_once() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "train", {"replicas": 4})
    world.pods("train", 3)
    world.cycle(3)
    assert world.binder.sent == [] and world.solves("placed") == 0
    assert world.record("StatefulSet", "train").phase is GangPhase.WAITING
    world.pods("train", 1, start=3)
    world.cycle()
    assert len(world.bound("train-")) == 4
    assert world.record("StatefulSet", "train").phase is GangPhase.BOUND
    assert world.recorder.reasons("train") == ["Scheduled"]
    assert all(world.recorder.reasons(f"train-{i}") == ["Scheduled"] for i in range(4))
    racks = {n.rsplit("-", 1)[0] for n in world.bound("train-").values()}
    assert len(racks) == 1  # 4 whole-node pods fit one rack: the solver chose one


def test_gated_members_cost_no_solve_no_bind_no_write_until_ungated() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "gated", {"replicas": 4})
    pods = world.pods("gated", 2) + world.pods("gated", 2, start=2, gates=("example.com/q",))
    world.clock.now += 100  # past any retry timer
    world.cycle(5)
    record = world.record("StatefulSet", "gated")
    assert record.phase is GangPhase.GATED and record.gates == {"example.com/q": 2}
    assert world.binder.sent == [] and world.recorder.events == []
    assert world.solves("placed") == world.solves("unschedulable") == 0
    for pod in pods[2:]:
        world.cache.put_pod(replace(pod, scheduling_gates=(), resource_version="2"))
    world.cycle()
    assert len(world.bound("gated-")) == 4


def test_invalid_gang_is_reported_once_never_bound_and_placed_once_fixed() -> None:
    world = World()
    world.lookup.put(POD_GROUPS, "pg", {"minMember": 0})
    world.pods("pg", 2, labels={"scheduling.x-k8s.io/pod-group": "pg"})
    world.cycle(4)
    record = world.record("PodGroup", "pg")
    assert record.phase is GangPhase.INVALID and "spec.minMember" in record.error
    assert world.recorder.reasons("pg") == ["InvalidGang"]  # once, not once per cycle
    assert world.binder.sent == []
    assert world.recorder.statuses[-1][1]["conditions"][0]["status"] == "False"
    world.lookup.put(POD_GROUPS, "pg", {"minMember": 2}, generation=2)
    world.cycle()
    assert len(world.bound("pg-")) == 2 and record.phase is GangPhase.BOUND
    assert world.recorder.statuses[-1][1]["phase"] == "Scheduled"


def test_unresolvable_gang_is_solved_again_only_when_nodes_or_the_gang_change() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "huge", {"replicas": 40})  # 32 nodes in the cluster
    world.pods("huge", 40)
    world.cycle()
    record = world.record("StatefulSet", "huge")
    assert record.phase is GangPhase.UNSCHEDULABLE
    assert record.attempt.code is FitCode.UNRESOLVABLE
    assert world.solves("unschedulable") == 1
    # Room freed elsewhere and the retry timer passing cannot make it fit: no solve.
    world.pods("other", 1, gpus=1)
    world.cache.pod_event("DELETED", {"metadata": {"name": "other-0", "namespace": NS}})
    world.clock.now += 1000
    world.cycle(3)
    assert world.solves("unschedulable") == 1
    assert world.recorder.reasons("huge") == ["FailedScheduling"]
    world.add_nodes(["z3"])  # 16 more nodes: 48 >= 40
    world.cycle()
    assert len(world.bound("huge-")) == 40


def test_unschedulable_gang_retries_when_room_is_freed_or_the_timer_passes() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "first", {"replicas": 30})
    world.pods("first", 30)
    world.cycle()
    world.lookup.put(STATEFULSETS, "second", {"replicas": 4})
    world.pods("second", 4)
    world.cycle(3)
    record = world.record("StatefulSet", "second")
    assert record.attempt.code is FitCode.UNSCHEDULABLE and world.solves("unschedulable") == 1
    world.clock.now += 31
    world.cycle()
    assert world.solves("unschedulable") == 2  # the timer
    assert world.recorder.reasons("second") == ["FailedScheduling"]  # same news: not again
    for i in range(30):
        world.cache.pod_event("DELETED", {"metadata": {"name": f"first-{i}", "namespace": NS}})
    world.cycle()
    assert len(world.bound("second-")) == 4


def test_failed_bind_is_repaired_next_to_the_bound_members_avoiding_that_node() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "train", {"replicas": 6})
    world.pods("train", 6)
    refused: list[str] = []

    def refuse_once(pod: str, node_name: str) -> int | None:
        if pod == f"{NS}/train-2" and not refused:
            refused.append(node_name)
            return 403  # an admission webhook said no, for this node
        return None
    world.binder.refuse = refuse_once
    world.cycle()
    record = world.record("StatefulSet", "train")
    assert record.phase is GangPhase.REPAIRING
    assert len(world.bound("train-")) == 5 and f"{NS}/train-2" not in world.cache.assumed
    assert record.failed_nodes == {"train-2": frozenset(refused)}
    assert "PartiallyBound" in world.recorder.reasons("train")
    world.cycle()  # within the backoff: not bound again yet
    assert [key for key, _ in world.binder.sent].count(f"{NS}/train-2") == 1
    world.clock.now += BIND_BACKOFF_S[0]
    world.cycle()
    placed = world.bound("train-")
    assert len(placed) == 6 and placed["train-2"] != refused[0]
    # Next to its rank neighbours: their rack's only free node is the refused one, so
    # the nearest room is the other rack of their block.
    assert placed["train-2"].rsplit("-", 2)[0] == placed["train-1"].rsplit("-", 2)[0]
    assert record.phase is GangPhase.BOUND and record.result.solver.algorithm == "nearby"
    assert len(record.result.assignments) == 6  # explain still shows every member
    assert [key for key, _ in world.binder.sent].count(f"{NS}/train-0") == 1  # never moved


def test_refused_binds_back_off_and_keep_their_room_until_the_refusal_ends() -> None:
    """Regression (soak, issue 20): an admission policy refusing binds to some nodes had a
    64-pod gang's 20 refused members re-bound every 0.2 s, and while it retried, later
    gangs were given the racks it needed: it stayed partly bound for good."""
    world = World()
    world.lookup.put(STATEFULSETS, "train", {"replicas": 4})
    world.lookup.objects["StatefulSet", NS, "train"]["metadata"]["annotations"] = {
        "phalanx.dev/required-topology": "rack"}  # one rack of 4: no other node to try
    world.pods("train", 4)
    refusing = [True]
    first: list[str] = []

    def refuse(pod: str, node_name: str) -> int | None:
        if pod == f"{NS}/train-1" and refusing[0]:
            first.append(node_name)
            return 422  # a ValidatingAdmissionPolicy said no
        return None
    world.binder.refuse = refuse
    world.cycle()
    record = world.record("StatefulSet", "train")
    assert record.phase is GangPhase.REPAIRING and len(world.bound("train-")) == 3
    # A later gang that needs every free node, the one train-1 was given included, is
    # not given it while train backs off.
    world.lookup.put(STATEFULSETS, "later", {"replicas": 29})
    world.pods("later", 29)
    world.cycle()
    assert world.bound("later-") == {}
    assert world.record("StatefulSet", "later").phase is GangPhase.UNSCHEDULABLE
    # Still refused, and no other node in its rack: retries come 1, 2, 4, 8, 16, 32 s
    # apart, not every cycle.
    for _ in range(60):
        world.clock.now += 1.0
        world.cycle()
    attempts = [key for key, _ in world.binder.sent].count(f"{NS}/train-1")
    assert attempts == 6 and record.bind_backoff_s == 32.0  # at 0, 1, 3, 7, 15, 31 s
    assert world.bound("later-") == {}  # the room train-1 needs stayed held throughout
    refusing[0] = False
    for _ in range(int(record.bind_backoff_s)):  # the loop runs a cycle a second
        world.clock.now += 1.0
        world.cycle()
    assert len(world.bound("train-")) == 4 and record.phase is GangPhase.BOUND
    assert record.bind_backoff_s == 0.0


def _as_json(pod: PodRecord, node_name: str, phase: str) -> dict[str, Any]:
    owner = pod.owner
    assert owner is not None
    return {"metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                         "labels": dict(pod.labels), "resourceVersion": "2",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": owner.kind,
                                              "name": owner.name, "uid": owner.uid,
                                              "controller": True}]},
            "spec": {"nodeName": node_name, "schedulerName": pod.scheduler_name,
                     "containers": [{"name": "c", "resources": {"requests": {GPU: "8"}}}]},
            "status": {"phase": phase}}


def _finishes(world: World, pod: PodRecord, node_name: str, phase: str = "Succeeded",
              succeeded_first: bool = False) -> None:
    """A Job's pod finishing, as the API server reports it (its cacher,
    cache_watcher.go): the unfinished-pods watch sends DELETED with the pod's *previous*
    state (Running: the same as for a pod deleted); the succeeded-pods watch, if it
    succeeded, ADDED with its final state. Two streams: either may arrive first."""
    events = [lambda: world.cache.pod_event("DELETED", _as_json(pod, node_name, "Running"))]
    if phase == "Succeeded":
        events.append(lambda: world.cache.finished_event(
            "ADDED", _as_json(pod, node_name, "Succeeded")))
    for event in reversed(events) if succeeded_first else events:
        event()


def test_a_success_arriving_while_a_cycle_runs_is_judged_by_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (soak, issue 20, the third hour): a member's success that arrived after
    the cycle read the finished pods and before it pruned them was pruned unread, so
    g1041-jobset counted 36 of its 40 finished members (and g1052-job 16 of 20) and its
    24 refused members waited for good, until a standby with a fresh list took over."""
    world = World()
    world.lookup.put(JOBS, "batch", {"parallelism": 4})
    pods = world.pods("batch", 4, kind="Job")
    _finishes(world, pods[0], "z1-b1-r1-n0")
    # batch-1 was bound and ran; its DELETED is here, its success not yet ...
    world.cache.pod_event("MODIFIED", _as_json(pods[1], "z1-b1-r1-n0", "Running"))
    world.cache.pod_event("DELETED", _as_json(pods[1], "z1-b1-r1-n0", "Running"))
    read = world.cache.finished_pods

    def read_then_success() -> list[PodRecord]:
        offered = read()
        # ... and arrives on the succeeded-pods watch's thread while the cycle runs.
        world.cache.finished_event("ADDED", _as_json(pods[1], "z1-b1-r1-n0", "Succeeded"))
        return offered

    monkeypatch.setattr(world.cache, "finished_pods", read_then_success)
    world.cycle()
    monkeypatch.undo()
    assert world.bound("batch-") == {}  # 1 finished + 2 pending: not yet
    assert f"{NS}/batch-1" in world.cache.finished
    world.cycle()
    assert sorted(world.bound("batch-")) == ["batch-2", "batch-3"]
    assert world.record("Job", "batch").phase is GangPhase.BOUND


def test_members_that_finished_count_and_the_rest_are_placed() -> None:
    """Regression (soak, issue 20): a JobSet's pods bound while 20 others were refused
    ran to completion and left the unfinished-pods watch; the 20 then waited for 64
    pending members that could never all exist again. Finished members now count."""
    world = World()
    world.lookup.put(JOBS, "batch", {"parallelism": 4})
    pods = world.pods("batch", 4, kind="Job")
    _finishes(world, pods[0], "z1-b1-r1-n0")  # bound earlier, ran, finished
    world.cache.pod_event("MODIFIED", _as_json(pods[1], "z1-b1-r1-n0", "Running"))
    world.cache.finished_event("ADDED", _as_json(pods[1], "z1-b1-r1-n0", "Succeeded"))
    # ... its DELETED from the unfinished-pods watch not here yet: it is counted once, as
    # the bound pod the cache still holds, and a cycle meanwhile must not forget its
    # success (the soak's hour: a JobSet's 43 members finished, 21 waited for good).
    assert len(world.cache.finished_pods()) == 1
    world.cycle()
    world.cache.pod_event("DELETED", _as_json(pods[1], "z1-b1-r1-n0", "Running"))
    assert len(world.cache.finished_pods()) == 2
    record = world.record("Job", "batch")
    assert record.phase is GangPhase.BOUND
    assert sorted(world.bound("batch-")) == ["batch-2", "batch-3"]
    # Kept while the gang has unfinished members; forgotten once it has none.
    world.cycle()
    assert len(world.cache.finished_pods()) == 2
    for pod in pods[2:]:
        world.cache.pod_event("DELETED", {"metadata": {"name": pod.name, "namespace": NS}})
    world.lookup.put(JOBS, "next", {"parallelism": 1})
    world.pods("next", 1, kind="Job")  # any cycle with work prunes them
    world.cycle()
    assert world.cache.finished_pods() == []
    # A failed member counts for nothing.
    world.lookup.put(JOBS, "other", {"parallelism": 3})
    others = world.pods("other", 3, kind="Job")
    _finishes(world, others[0], "z1-b1-r1-n1", phase="Failed")
    world.cycle()
    assert world.bound("other-") == {}
    assert world.record("Job", "other").phase is GangPhase.WAITING
    assert explanation(world.record("Job", "other")).summary == (
        "waiting for members: minMember 3, 2 pending, 0 bound, 0 finished")
    # Nor does a deleted one: the unfinished-pods watch says the same for both.
    _finishes(world, others[1], "z1-b1-r1-n1", phase="Deleted")
    world.cycle()
    assert world.bound("other-") == {}


def test_a_bound_pod_keeps_its_node_however_long_the_watch_lags() -> None:
    """Regression (soak, issue 20): a leader's pod watch ran two minutes behind a loaded
    API server; the assumptions of its successful binds expired after 30 s and the next
    gang was bound onto the same nodes (two 8-GPU pods on one node)."""
    world = World()
    world.binder.watch = False  # the watch shows none of the binds
    world.lookup.put(STATEFULSETS, "first", {"replicas": 16})
    world.pods("first", 16)
    world.cycle()
    first = dict(world.binder.sent)
    assert len(first) == 16
    world.clock.now += 10 * world.cache.assume_ttl_s
    world.lookup.put(STATEFULSETS, "second", {"replicas": 16})
    world.pods("second", 16)
    world.lookup.put(STATEFULSETS, "third", {"replicas": 1})
    world.pods("third", 1)
    world.cycle(2)
    second = {k: n for k, n in world.binder.sent if k.startswith(f"{NS}/second-")}
    assert len(second) == 16 and not set(second.values()) & set(first.values())
    # The 32 nodes are full: the third gang waits, the first is never bound again.
    assert not any(k.startswith(f"{NS}/third-") for k, _ in world.binder.sent)
    assert len(world.binder.sent) == 32
    # The watch catches up: the assumptions end as the pods show up bound.
    for key, node_name in first.items():
        world.cache.put_pod(replace(world.cache.pods[key], node_name=node_name))
    assert not any(k in world.cache.assumed for k in first)


def test_a_409_naming_another_node_counts_the_pod_on_that_node() -> None:
    """A bind an earlier leader sent can land after its answer was lost: the next bind
    is refused with 409 and the node the pod is on. That node is taken, not freed."""
    world = World()
    world.binder.watch = False
    there = "z2-b2-r2-n3"
    world.binder.elsewhere[f"{NS}/solo-0"] = there
    world.lookup.put(STATEFULSETS, "solo", {"replicas": 1})
    world.pods("solo", 1)
    world.cycle()
    assert world.cache.assumed[f"{NS}/solo-0"].node == there
    world.clock.now += 10 * world.cache.assume_ttl_s
    world.lookup.put(STATEFULSETS, "fill", {"replicas": 31})
    world.pods("fill", 31)
    world.lookup.put(STATEFULSETS, "one", {"replicas": 1})
    world.pods("one", 1)
    world.cycle(2)
    fill = {n for k, n in world.binder.sent if k.startswith(f"{NS}/fill-")}
    assert len(fill) == 31 and there not in fill
    assert not any(k.startswith(f"{NS}/one-") for k, _ in world.binder.sent)
    assert [k for k, _ in world.binder.sent].count(f"{NS}/solo-0") == 1


def test_a_group_sized_by_the_members_seen_is_placed_once_it_stops_growing() -> None:
    """Regression (soak, issue 20): a Volcano group without the Volcano API is as big as
    the members seen; placed while its pods were still being created, 4 of 16 were
    bound as a whole gang and the other 12 could not join them in their required rack."""
    world = World()

    def member(i: int, age_s: float) -> PodRecord:
        born = datetime.fromtimestamp(world.clock.time() - age_s, UTC)
        pod = PodRecord(NS, f"vg-{i}", uid=f"u-vg-{i}", scheduler_name="phalanx",
                        requests={GPU: 8, "pods": 1},
                        annotations={"scheduling.k8s.io/group-name": "vg"},
                        created=born.strftime("%Y-%m-%dT%H:%M:%SZ"), resource_version="1")
        world.cache.put_pod(pod)
        return pod
    for i in range(2):
        member(i, age_s=1.0)
    world.cycle()
    assert world.binder.sent == []  # still arriving: the group may be bigger
    record = next(r for k, r in world.scheduler.records.items() if k.name == "vg")
    said = explanation(record)
    assert said.verdict == "waiting" and said.summary.startswith("members still arriving")
    world.clock.now += 5.0
    member(2, age_s=0.0)  # a third member: the settle time starts again
    world.clock.now += 6.0
    world.cycle()
    assert world.binder.sent == []
    world.clock.now += 5.0
    world.cycle()
    assert sorted(k for k, _ in world.binder.sent) == [f"{NS}/vg-{i}" for i in range(3)]


def test_leadership_lost_mid_bind_stops_binding_and_leaves_the_rest() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "a", {"replicas": 4})
    world.lookup.put(STATEFULSETS, "b", {"replicas": 2})
    world.pods("a", 4)
    world.pods("b", 2)
    sent_before_loss = 2
    world.binder.allowed = lambda: len(world.binder.sent) < sent_before_loss
    world.leading.check = lambda: len(world.binder.sent) < sent_before_loss
    world.cycle()
    assert len(world.binder.sent) == 2  # the rest never went out
    assert world.cache.assumed == {}  # unsent binds give their room back
    # The cycle stopped: the next gang was not even solved, it is the new leader's.
    assert GangKey("StatefulSet", NS, "b") not in world.scheduler.records
    failures = [e for e in world.recorder.events if e[2] in ("FailedScheduling",
                                                             "PartiallyBound")]
    assert failures == []  # not a failure: nothing reported for the unsent ones
    world.leading.check = lambda: True
    world.binder.allowed = lambda: True
    world.cycle()
    assert len(world.bound("a-")) == 4 and len(world.bound("b-")) == 2


def test_schedule_timeout_is_reported_and_the_gang_stays_queued() -> None:
    world = World()
    world.lookup.put(POD_GROUPS, "slow", {"minMember": 3, "scheduleTimeoutSeconds": 5})
    world.pods("slow", 2, labels={"scheduling.x-k8s.io/pod-group": "slow"})
    world.cycle()
    world.clock.now += 6
    world.cycle()
    assert world.recorder.reasons("slow").count("ScheduleTimeout") == 1
    world.cycle()  # a new wait started: no second Event at once
    assert world.recorder.reasons("slow").count("ScheduleTimeout") == 1
    world.pods("slow", 1, start=2, labels={"scheduling.x-k8s.io/pod-group": "slow"})
    world.cycle()
    assert len(world.bound("slow-")) == 3


def test_a_job_and_a_statefulset_of_one_name_are_two_gangs() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "train", {"replicas": 2})
    world.lookup.put(JOBS, "train", {"parallelism": 3})
    world.pods("train", 2)
    world.pods("train", 3, kind="Job", start=10)
    world.cycle()
    sts, job = world.record("StatefulSet", "train"), world.record("Job", "train")
    assert (sts.size, job.size) == (2, 3)
    assert sts.phase is job.phase is GangPhase.BOUND
    assert len(world.bound("train-")) == 5


@pytest.mark.parametrize("label", ["apps.kubernetes.io/pod-index"])
def test_a_malformed_rank_label_is_named_and_nothing_binds(label: str) -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "bad", {"replicas": 2})
    pods = world.pods("bad", 2)
    world.cache.put_pod(replace(pods[1], labels={label: "one"}))
    world.cycle(2)
    record = world.record("StatefulSet", "bad")
    assert record.phase is GangPhase.INVALID and label in record.error
    assert world.binder.sent == [] and world.recorder.reasons("bad") == ["InvalidGang"]


def claim(name: str, storage_class: str, volume: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"storageClassName": storage_class, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "10Gi"}},
                     **({"volumeName": volume} if volume else {})},
            "status": {"phase": "Bound" if volume else "Pending"}}


def local_volume(name: str, node_name: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "capacity": {"storage": "100Gi"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In",
                          "values": [node_name]}]}]}}},
            "status": {"phase": "Available"}}


def classes() -> list[dict[str, Any]]:
    return [{"metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner",
             "volumeBindingMode": "WaitForFirstConsumer"},
            {"metadata": {"name": "fast"}, "provisioner": "ebs.csi.aws.com",
             "volumeBindingMode": "Immediate"}]


def test_a_missing_claim_is_named_and_solved_again_once_it_exists() -> None:
    world = World()
    world.cache.install_objects(STORAGE_CLASSES, classes())
    world.lookup.put(STATEFULSETS, "db", {"replicas": 1})
    world.pods("db", 1, claim="data")
    world.cycle(3)
    record = world.record("StatefulSet", "db")
    assert record.phase is GangPhase.UNSCHEDULABLE
    assert record.attempt.code is FitCode.UNRESOLVABLE
    assert 'persistentvolumeclaim "data-db-0" not found' in record.result.reason
    assert world.solves("unschedulable") == 1
    world.cache.install_objects(PVCS, [claim("data-db-0", "fast")])  # Immediate, unbound
    world.cycle()
    assert "pod has unbound immediate PersistentVolumeClaims" in record.result.reason
    assert world.binder.sent == []


def test_claims_waiting_for_a_consumer_get_static_volumes_then_the_gang_is_bound() -> None:
    world = World()
    nodes = sorted(world.cache.nodes)
    world.cache.install_objects(STORAGE_CLASSES, classes())
    # Local volumes on two nodes of different racks only: the gang must go there.
    world.cache.install_objects(PVS, [local_volume("pv-a", nodes[0]),
                                      local_volume("pv-b", nodes[20])])
    world.cache.install_objects(PVCS, [claim("data-train-0", "local"),
                                       claim("data-train-1", "local")])
    world.lookup.put(STATEFULSETS, "train", {"replicas": 2})
    world.pods("train", 2, claim="data")
    world.cycle()
    record = world.record("StatefulSet", "train")
    assert record.phase is GangPhase.VOLUMES and world.binder.sent == []
    chosen = {a.claim: (a.volume, a.node) for a in world.volumes.actions}
    assert sorted(v for v, _ in chosen.values()) == ["pv-a", "pv-b"]
    assert {n for _, n in chosen.values()} == {nodes[0], nodes[20]}
    assert set(world.cache.all_pods()[1]) == {f"{NS}/train-0", f"{NS}/train-1"}  # reserved
    world.clock.now += 60  # past the assume TTL: the room stays reserved while waiting
    world.cycle()
    assert set(world.cache.all_pods()[1]) == {f"{NS}/train-0", f"{NS}/train-1"}
    assert world.binder.sent == []
    # The volume controller binds the claims; the gang is bound where its volumes are.
    world.cache.install_objects(PVCS, [claim(c, "local", v) for c, (v, _) in chosen.items()])
    world.cycle()
    assert record.phase is GangPhase.BOUND
    assert {n for _, n in world.binder.sent} == {nodes[0], nodes[20]}


def test_a_pod_that_cannot_be_read_is_named_once_and_never_placed() -> None:
    world = World()
    raw = {"metadata": {"name": "broken", "namespace": NS, "uid": "u-b"},
           "spec": {"schedulerName": "phalanx", "containers": [
               {"name": "c", "resources": {"requests": {"nvidia.com/gpu": "eight"}}}]}}
    world.cache.pod_event("ADDED", raw)
    world.cycle(3)
    assert world.recorder.reasons("broken") == ["FailedScheduling"]
    assert "nvidia.com/gpu" in world.recorder.events[0][3]
    assert world.binder.sent == []
    world.cache.pod_event("DELETED", raw)
    world.cycle()
    assert world.cache.unreadable("phalanx") == []


def test_csi_attach_limits_keep_pods_off_full_nodes() -> None:
    from kube.resources import CSI_NODES

    world = World()
    nodes = sorted(world.cache.nodes)
    provisioned = {"metadata": {"name": "ebs"}, "provisioner": "ebs.csi.aws.com",
                   "volumeBindingMode": "WaitForFirstConsumer"}
    world.cache.install_objects(STORAGE_CLASSES, [provisioned])
    # Each node attaches at most one ebs volume; the first node's is taken already.
    world.cache.install_objects(CSI_NODES, [
        {"metadata": {"name": n}, "spec": {"drivers": [
            {"name": "ebs.csi.aws.com", "allocatable": {"count": 1}}]}} for n in nodes])
    world.cache.install_objects(PVS, [{"metadata": {"name": "pv-used"}, "spec": {
        "storageClassName": "ebs", "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "v1"}}}])
    world.cache.put_pod(PodRecord(NS, "holder", node_name=nodes[0], phase="Running",
                                  requests={"pods": 1}, volumes=Volumes(("held",))))
    claims = [claim("held", "ebs", "pv-used")] + [claim(f"data-train-{i}", "ebs")
                                                   for i in range(32)]
    world.cache.install_objects(PVCS, claims)
    world.lookup.put(STATEFULSETS, "train", {"replicas": 32})
    world.pods("train", 32, claim="data", gpus=1)
    world.cycle()
    record = world.record("StatefulSet", "train")
    assert record.phase is GangPhase.UNSCHEDULABLE  # 31 nodes may attach one more
    assert "exceed max volume count" in record.result.reason
    world.lookup.put(STATEFULSETS, "small", {"replicas": 31})
    world.pods("small", 31, claim="data", gpus=1)
    world.cache.install_objects(PVCS, claims + [claim(f"data-small-{i}", "ebs")
                                                for i in range(31)])
    world.cycle()
    chosen = {a.node for a in world.volumes.actions if a.claim.startswith("data-small")}
    assert len(chosen) == 31 and nodes[0] not in chosen


def test_a_gang_whose_reason_keeps_changing_is_reported_at_most_every_interval() -> None:
    from scheduler.report import REPORT_INTERVAL_S

    world = World(Config(unschedulable_retry_s=0.5))
    world.lookup.put(STATEFULSETS, "hold", {"replicas": 30})
    world.pods("hold", 30)
    world.cycle()
    world.lookup.put(STATEFULSETS, "wait", {"replicas": 4})
    world.pods("wait", 4)
    for step in range(120):  # two minutes, the free room changing every second
        world.clock.now += 1.0
        if step % 2:
            world.pods("churn", 1, gpus=8, start=step)
            world.cache.put_pod(replace(world.cache.pods[f"{NS}/churn-{step}"],
                                        node_name=sorted(set(world.cache.nodes) - set(
                                            world.bound("").values()))[0]))
        else:
            for key in [k for k in world.cache.pods if "/churn-" in k]:
                world.cache.pod_event("DELETED", {"metadata": {"name": key.split("/")[1],
                                                              "namespace": NS}})
        world.cycle()
    gang_reports = world.recorder.reasons("wait")
    assert world.solves("unschedulable") > 50  # solved again and again...
    assert 2 <= len(gang_reports) <= 120 / REPORT_INTERVAL_S + 1  # ...reported seldom
    assert all(world.recorder.reasons(f"wait-{i}") == ["FailedScheduling"] for i in range(4))


def test_a_finished_gang_stays_explainable_for_a_while_then_is_forgotten() -> None:
    from scheduler.cycle import PRUNE_EVERY_S, RETAIN_S

    world = World()
    world.lookup.put(JOBS, "done", {"parallelism": 2})
    world.pods("done", 2, kind="Job")
    world.cycle()
    assert world.record("Job", "done").phase is GangPhase.BOUND
    for i in range(2):  # the pods finish: they leave the unfinished-pods watch
        world.cache.pod_event("DELETED", {"metadata": {"name": f"done-{i}", "namespace": NS}})
    world.clock.now += PRUNE_EVERY_S + 1
    world.cycle()
    world.clock.now += RETAIN_S - 2 * PRUNE_EVERY_S
    world.cycle()
    assert GangKey("Job", NS, "done") in world.scheduler.records
    world.clock.now += 2 * PRUNE_EVERY_S + 2
    world.cycle()
    assert GangKey("Job", NS, "done") not in world.scheduler.records


# -- members created later: JobSet's exclusive placement ---------------------------------
def jobset_pods(world: World, job: int, indexes: range, selector: dict[str, str] | None = None
                ) -> list[PodRecord]:
    """Pods of JobSet `js` as JobSet's controller and webhook make them: leaders carry
    exclusive affinity, followers (created once their leader is bound) a nodeSelector."""
    from scheduler.sources.jobset import job_key
    from topology.podrules import InterPod, PodAffinityTerm
    from topology.selectors import LabelSelector, Requirement

    key = job_key(NS, f"js-workers-{job}")
    out = []
    for i in indexes:
        labels = {"jobset.sigs.k8s.io/jobset-name": "js",
                  "jobset.sigs.k8s.io/replicatedjob-name": "workers",
                  "jobset.sigs.k8s.io/job-index": str(job),
                  "jobset.sigs.k8s.io/job-global-index": str(job),
                  "jobset.sigs.k8s.io/job-key": key,
                  "batch.kubernetes.io/job-completion-index": str(i)}
        rules = InterPod()
        if i == 0:
            own = LabelSelector((Requirement("jobset.sigs.k8s.io/job-key", "In", (key,)),))
            others = LabelSelector((Requirement("jobset.sigs.k8s.io/job-key", "Exists", ()),
                                    Requirement("jobset.sigs.k8s.io/job-key", "NotIn", (key,))))
            rules = InterPod(affinity=(PodAffinityTerm(own, "rack"),),
                             anti_affinity=(PodAffinityTerm(others, "rack"),))
        pod = PodRecord(NS, f"js-workers-{job}-{i}-x", uid=f"u-{job}-{i}",
                        scheduler_name="phalanx", requests={GPU: 8, "pods": 1}, labels=labels,
                        annotations={"alpha.jobset.sigs.k8s.io/exclusive-topology": "rack"},
                        node_selector=selector or {}, inter_pod=rules,
                        owner=OwnerRef("Job", f"js-workers-{job}", f"uid-{job}", "batch/v1"),
                        created="2026-12-01T00:00:00Z", resource_version="1")
        world.cache.put_pod(pod)
        out.append(pod)
    return out


def test_exclusive_jobset_binds_leaders_holds_followers_room_then_places_them_there() -> None:
    world = World()
    pod_template = {"spec": {"schedulerName": "phalanx", "containers": [
        {"name": "w", "image": "x", "resources": {"limits": {GPU: "8"}}}]}}
    world.lookup.objects["JobSet", NS, "js"] = {
        "kind": "JobSet", "metadata": {
            "name": "js", "namespace": NS, "uid": "uid-js", "generation": 1,
            "annotations": {"alpha.jobset.sigs.k8s.io/exclusive-topology": "rack"}},
        "spec": {"replicatedJobs": [{"name": "workers", "replicas": 2, "template": {
            "spec": {"parallelism": 4, "completions": 4, "template": pod_template}}}]}}
    jobset_pods(world, 0, range(1))
    world.cycle()
    assert world.binder.sent == []  # minMember: both Jobs' leaders
    jobset_pods(world, 1, range(1))
    world.cycle()
    leaders = world.bound("js-workers-")
    assert len(leaders) == 2
    held = world.cache.held(str(GangKey("JobSet", NS, "js")))
    assert held is not None and len(held.entries) == 6  # 3 followers per Job
    rack = {name: node.rsplit("-", 1)[0] for name, node in leaders.items()}
    assert len(set(rack.values())) == 2  # exclusive: each Job in a rack of its own
    assert world.record("JobSet", "js").held == 6

    # Another gang does not take the held room: of 32 nodes, 2 hold leaders and 6 are
    # held; a gang of 24 fits exactly the rest, and one of 25 does not fit.
    held_nodes = {node for _, node in held.entries}
    world.lookup.put(STATEFULSETS, "big", {"replicas": 25})
    world.pods("big", 25)
    world.cycle()
    assert world.bound("big-") == {}
    world.lookup.put(STATEFULSETS, "rest", {"replicas": 24})
    world.pods("rest", 24)
    world.cycle()
    assert len(world.bound("rest-")) == 24
    assert not held_nodes & set(world.bound("rest-").values())

    # The followers come (JobSet's webhook gives them their leader's rack) and land on
    # the nodes held for them; the hold is gone once every member exists.
    for job in (0, 1):
        leader_rack = rack[f"js-workers-{job}-0-x"]
        jobset_pods(world, job, range(1, 4), selector={"rack": leader_rack.split("-")[-1]})
    world.cycle(2)
    placed = world.bound("js-workers-")
    assert len(placed) == 8
    followers = {n for name, n in placed.items() if not name.endswith("-0-x")}
    assert followers == held_nodes
    assert world.cache.held(str(GangKey("JobSet", NS, "js"))) is None


def test_a_failed_slice_member_is_replaced_inside_its_slices_rack_or_waits_saying_so() -> None:
    world = World()
    world.lookup.put(STATEFULSETS, "sl", {"replicas": 8})
    world.lookup.objects["StatefulSet", NS, "sl"]["metadata"]["annotations"] = {
        "phalanx.dev/slice-required-topology": "rack", "phalanx.dev/slice-size": "4"}
    pods = world.pods("sl", 8)
    world.cycle()
    placed = world.bound("sl-")
    rack = {name: node.rsplit("-", 1)[0] for name, node in placed.items()}
    assert len(placed) == 8
    for block in (range(4), range(4, 8)):
        assert len({rack[f"sl-{i}"] for i in block}) == 1
    # sl-5 fails: a new pod of that name comes back pending; it rejoins its slice's rack.
    world.cache.pod_event("DELETED", {"metadata": {"name": "sl-5", "namespace": NS}})
    world.pods("sl", 1, start=5)
    world.cycle()
    assert world.bound("sl-")["sl-5"].rsplit("-", 1)[0] == rack["sl-4"]
    # sl-6 fails and another workload takes its node: its rack is full, and the new
    # sl-6 waits, the reason named, rather than leave its slice.
    home = rack["sl-4"]
    world.cache.pod_event("DELETED", {"metadata": {"name": "sl-6", "namespace": NS}})
    free = [n for n in world.cache.nodes if n.startswith(home) and n not in
            world.bound("sl-").values()]
    for i, node_name in enumerate(free):
        world.cache.put_pod(PodRecord(NS, f"filler-{i}", node_name=node_name,
                                      requests={GPU: 8}, phase="Running"))
    world.pods("sl", 1, start=6)
    world.cycle()
    assert "sl-6" not in world.bound("sl-")
    result = world.record("StatefulSet", "sl").result
    assert "slice" in result.reason and "domain" in result.reason
    del pods
