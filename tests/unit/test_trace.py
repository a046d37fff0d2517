"""The replay trace (benchmarks.trace): seeded, within bounds, heavy-tailed; and a tiny
simulation replaying it (benchmarks.simulate) without over-committing a node."""

from __future__ import annotations

import pytest

from benchmarks.replay import GPUS_PER_POD
from benchmarks.simulate import fleet_tree, replay
from benchmarks.trace import PRIORITIES, Job, TraceSpec, generate, median_pods


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    spec = TraceSpec(jobs=300, seed=7)
    assert generate(spec) == generate(spec)
    assert generate(spec) != generate(TraceSpec(jobs=300, seed=8))


def test_sizes_are_powers_of_two_within_bounds_and_durations_clipped() -> None:
    spec = TraceSpec(jobs=2000, seed=3, min_pods=8, max_pods=256, capacity_pods=1000,
                     median_duration_s=60, min_duration_s=5, max_duration_s=600)
    jobs = generate(spec)
    assert {job.pods for job in jobs} == {8, 16, 32, 64, 128, 256}
    assert all(5 <= job.duration_s <= 600 for job in jobs)
    arrivals = [job.arrival_s for job in jobs]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0
    assert {job.priority for job in jobs} == set(PRIORITIES)


def test_heavy_tail_most_jobs_small_most_gpu_time_large() -> None:
    jobs = generate(TraceSpec(jobs=5000, seed=1))
    assert median_pods(jobs) <= 16
    small = [job for job in jobs if job.pods <= 16]
    large = [job for job in jobs if job.pods >= 256]
    assert len(small) > 0.55 * len(jobs) and len(large) < 0.1 * len(jobs)

    def work(group: list[Job]) -> float:
        return sum(job.pods * job.duration_s for job in group)
    assert work(large) > work(small)


def test_offered_load_is_what_was_asked() -> None:
    spec = TraceSpec(jobs=1000, seed=2, capacity_pods=5000, load=0.8)
    jobs = generate(spec)
    span = jobs[-1].arrival_s
    offered = sum(job.pods * job.duration_s for job in jobs) / (span * spec.capacity_pods)
    assert offered == pytest.approx(0.8, rel=0.1)


def test_bad_spec_named() -> None:
    with pytest.raises(ValueError, match="capacity_pods"):
        generate(TraceSpec(capacity_pods=100, max_pods=1024))


def test_a_small_replay_never_overcommits_and_cpsat_is_at_its_optimum() -> None:
    tree = fleet_tree(600, seed=1)
    jobs = generate(TraceSpec(jobs=40, seed=4, capacity_pods=600, max_pods=64,
                              median_duration_s=600, load=1.2))
    end = jobs[-1].arrival_s + 600
    for algorithm in ("cpsat", "greedy"):
        run = replay(tree, jobs, algorithm, 1.0, end)
        started = [r for r in run.records if r.start_s is not None]
        assert started and all(s.free_gpus >= 0 and s.allocated_gpus % GPUS_PER_POD == 0
                               for s in run.samples)
        assert all(r.start_s is not None and r.start_s >= r.job.arrival_s for r in started)
        if algorithm == "cpsat":
            assert all(r.domains_used == r.optimum for r in started)
