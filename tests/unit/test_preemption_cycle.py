"""The cycle's preemption decisions, with in-memory collaborators (the cycle tests'
world) and an evictor double that does what the Eviction API does to the cache: the
victim turns terminating, and is gone when the test deletes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from kube.resources import PDBS, STATEFULSETS
from scheduler.api.views import explanation
from scheduler.cache import ClusterCache
from scheduler.collaborators import EvictResult
from scheduler.preemption import PROTECT_S
from scheduler.state import GangPhase
from tests.unit.helpers import GPU
from tests.unit.test_cycle import NS, World
from topology.records import PodRecord


@dataclass
class Evictor:
    cache: ClusterCache | None = None
    refuse: set[str] = field(default_factory=set)
    """Pod keys a PodDisruptionBudget protects (429)."""
    evicted: list[str] = field(default_factory=list)
    nominated: list[tuple[str, str]] = field(default_factory=list)

    def evict(self, pods: Sequence[str]) -> list[EvictResult]:
        out = []
        for key in pods:
            if key in self.refuse:
                out.append(EvictResult(key, False, 429, "Cannot evict pod as it would "
                                                        "violate the pod's disruption budget."))
                continue
            self.evicted.append(key)
            assert self.cache is not None
            self.cache.put_pod(replace(self.cache.pods[key], deleting=True))
            out.append(EvictResult(key, True, 201))
        return out

    def nominate(self, placements: Sequence[tuple[str, str]]) -> list[str]:
        self.nominated.extend(placements)
        return []


def world_with_evictor() -> tuple[World, Evictor]:
    evictor = Evictor()
    world = World(evictor=evictor)
    evictor.cache = world.cache
    return world, evictor


def gone(world: World, keys: list[str]) -> None:
    for key in keys:
        namespace, name = key.split("/")
        world.cache.pod_event("DELETED", {"metadata": {"name": name, "namespace": namespace}})


def fill(world: World, name: str, count: int, priority: int = 0) -> None:
    world.lookup.put(STATEFULSETS, name, {"replicas": count})
    world.pods(name, count, priority=priority)
    world.cycle()
    assert len(world.bound(f"{name}-")) == count


def test_high_priority_gang_evicts_the_cheapest_gang_whole_then_binds_in_its_room() -> None:
    world, evictor = world_with_evictor()
    fill(world, "low-a", 20)  # 32 nodes of 8 GPUs: 20 + 12
    fill(world, "low-b", 12)
    world.lookup.put(STATEFULSETS, "high", {"replicas": 12})
    world.pods("high", 12, priority=100)
    world.cycle()
    record = world.record("StatefulSet", "high")
    assert record.phase is GangPhase.PREEMPTING
    # 12 pods: evicting low-b (12 pods) frees exactly enough; low-a would cost more.
    assert sorted(evictor.evicted) == sorted(f"{NS}/low-b-{i}" for i in range(12))
    assert len(evictor.nominated) == 12
    assert world.recorder.reasons("high")[-1] == "Preempting"
    assert world.recorder.reasons("low-b-0") == ["Scheduled", "Preempted"]
    said = explanation(record)
    assert said.verdict == "preempting" and said.preemption is not None
    assert said.preemption.chosen.victims == [f"Gang {NS}/StatefulSet/low-b"]
    assert said.preemption.chosen.pods == 12 and said.preemption.status == "OPTIMAL"
    # Victims still terminating: nothing more is evicted, nothing bound, no new Event.
    events = len(world.recorder.events)
    world.clock.now += 5
    world.cycle(3)
    assert len(evictor.evicted) == 12 and not world.bound("high-")
    assert len(world.recorder.events) == events
    # The victims' StatefulSet recreates them (lower priority): they cannot take the
    # held room, and they never preempt the higher-priority gang.
    gone(world, evictor.evicted)
    world.pods("low-b", 12, priority=0, uid="-new")
    world.cycle()
    assert len(world.bound("high-")) == 12
    assert record.phase is GangPhase.BOUND
    assert not world.bound("low-b-")
    assert len(evictor.evicted) == 12
    held = {n for _, n in evictor.nominated}
    assert set(world.bound("high-").values()) == held


def test_never_policy_and_equal_priority_do_not_preempt_but_say_what_would() -> None:
    for priority, policy in ((100, "Never"), (0, "PreemptLowerPriority")):
        world, evictor = world_with_evictor()
        fill(world, "low", 32)
        world.lookup.put(STATEFULSETS, "wants", {"replicas": 4})
        world.pods("wants", 4, priority=priority, policy=policy)
        world.cycle()
        record = world.record("StatefulSet", "wants")
        assert evictor.evicted == [] and record.phase is GangPhase.UNSCHEDULABLE
        assert any("evicting Gang StatefulSet/ml/low" in r or "evicting Gang ml/" in r
                   for r in record.remedies), record.remedies


def test_a_pdb_protected_gang_is_not_chosen_and_a_refused_eviction_is_not_retried() -> None:
    world, evictor = world_with_evictor()
    fill(world, "guarded", 16)
    fill(world, "free", 16)
    world.cache.install_objects(PDBS, [{
        "metadata": {"name": "keep", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
        "status": {"disruptionsAllowed": 0}}])
    for pod in [p for p in world.cache.pods.values() if p.name.startswith("guarded-")]:
        world.cache.put_pod(replace(pod, labels={**pod.labels, "app": "guarded"}))
    world.lookup.put(STATEFULSETS, "high", {"replicas": 16})
    world.pods("high", 16, priority=100)
    world.cycle()
    assert sorted(evictor.evicted) == sorted(f"{NS}/free-{i}" for i in range(16))
    # A refusal the cache could not foresee (the API server's 429) keeps the unit out.
    world2, evictor2 = world_with_evictor()
    fill(world2, "a", 16)
    fill(world2, "b", 16)
    evictor2.refuse = {f"{NS}/a-{i}" for i in range(16)} | {f"{NS}/b-{i}" for i in range(16)}
    world2.lookup.put(STATEFULSETS, "high", {"replicas": 16})
    world2.pods("high", 16, priority=100)
    world2.cycle()
    record = world2.record("StatefulSet", "high")
    assert record.phase is not GangPhase.PREEMPTING
    assert "every eviction was refused" in record.remedies[-1]
    protected = set(world2.scheduler.protected)
    assert len(protected) == 1
    first = protected.pop()
    other = "b" if first.endswith("/a") else "a"
    evictor2.refuse = set()
    world2.clock.now += 31  # the retry timer: the refused gang is out for PROTECT_S
    world2.cycle()
    assert sorted(evictor2.evicted) == sorted(f"{NS}/{other}-{i}" for i in range(16))
    assert record.phase is GangPhase.PREEMPTING
    assert world2.scheduler.protected[first] == 1000 + PROTECT_S


def single(name: str, priority: int, node_name: str = "") -> PodRecord:
    return PodRecord(NS, name, uid=f"u-{name}", scheduler_name="phalanx",
                     node_name=node_name, phase="Running" if node_name else "Pending",
                     requests={GPU: 8, "pods": 1}, priority=priority,
                     created="2026-12-01T00:00:00Z")


def test_a_single_pod_preempts_the_cheapest_victim_and_takes_its_node() -> None:
    """The per-pod path: a 31-pod gang and one lone pod fill 32 nodes; a high-priority
    lone pod evicts the lone pod (one victim of 8 GPUs, not the gang of 248), is
    nominated to its node, and bound there once it is gone."""
    world, evictor = world_with_evictor()
    fill(world, "gang", 31)
    world.cache.put_pod(single("lone", 0))
    world.cycle()
    lone_node = world.bound("lone")["lone"]
    world.cache.put_pod(single("urgent", 100))
    world.cycle()
    assert evictor.evicted == [f"{NS}/lone"]
    assert evictor.nominated == [(f"{NS}/urgent", lone_node)]
    assert "Preempted" in world.recorder.reasons("lone")
    world.cycle(2)  # the victim still terminating: nothing more evicted
    assert evictor.evicted == [f"{NS}/lone"]
    gone(world, evictor.evicted)
    pod = world.cache.pods[f"{NS}/urgent"]
    world.cache.put_pod(replace(pod, nominated_node=lone_node))  # the patch, via the watch
    world.cycle()
    assert world.bound("urgent") == {"urgent": lone_node}
