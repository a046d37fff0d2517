"""A seeded synthetic trace of gang jobs: arrivals, sizes, durations, priorities.

One trace feeds both replays (`benchmarks.simulate`: the solver alone on a synthetic
fleet; `benchmarks.churn`: a real KWOK cluster), so the two differ only in what runs it.

What it follows, and how loosely. The published GPU-cluster traces agree on a shape, not
on numbers we could copy: Microsoft Philly (Jeon et al., ATC'19), SenseTime Helios (Hu et
al., SC'21) and Alibaba PAI (Weng et al., NSDI'22) all report job GPU demand that is
heavy-tailed (most jobs are small, a few large jobs hold a large share of the GPU time),
GPU counts concentrated on powers of two, run times spread over orders of magnitude
(roughly log-normal, minutes to days), and (Philly) gang scheduling with locality
constraints making large jobs queue longest. Every number below is **our choice**,
picked to reproduce that shape, not a fitted parameter of any of those traces:

- **size**: a power of two of pods, `min_pods` to `max_pods` (8 to 1,024 by default;
  every pod takes a whole 8-GPU node), with P(size = 2^k) proportional to
  2^(-k * `size_decay`). At 0.7 the default gives 39 % of jobs 8 pods, 63 % at most 16,
  1.3 % of 1,024; each doubling of size holds ~1.23x the GPU-time of the one below, so
  the largest jobs hold the most GPU-time: few jobs, most of the GPU-hours.
- **duration**: log-normal with median `median_duration_s` and log-sd `duration_sigma`
  (1.2: the middle 90 % of jobs span a factor of ~50), clipped to [`min_duration_s`,
  `max_duration_s`]; independent of size (the traces show only a weak correlation).
  Durations are in seconds of the replay's clock: a churn replay compresses hours into
  seconds by choosing a small median, the same shape.
- **arrivals**: a Poisson process whose rate makes the offered load (pod-seconds asked
  per second) `load` times `capacity_pods`, computed from the drawn jobs themselves.
- **priority**: three classes, drawn independently of size: high 10 %, normal 60 %,
  low 30 % (`PRIORITIES`). Replays queue by priority, then arrival; none preempts.
- **topology**: a fraction `required_share` of jobs *require* one domain of the lowest
  level that can hold them (`benchmarks.replay.required_level`, as a Kueue TAS
  `podset-required-topology` would); the rest only prefer compactness.

Deterministic: the same spec gives the same jobs on every machine (`random.Random(seed)`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple


class Priority(NamedTuple):
    name: str
    value: int
    share: float


PRIORITIES = (Priority("trace-high", 1000, 0.1), Priority("trace-normal", 100, 0.6),
              Priority("trace-low", 10, 0.3))


class Job(NamedTuple):
    """One job of the trace. A tuple: a trace holds thousands."""

    number: int
    arrival_s: float
    duration_s: float
    pods: int
    priority: Priority
    required: bool
    """It must sit inside one domain of the lowest level that can hold it."""

    @property
    def name(self) -> str:
        return f"job-{self.number:05d}"


@dataclass(frozen=True)
class TraceSpec:
    jobs: int = 2000
    seed: int = 1
    capacity_pods: int = 100_000
    """Pods (whole nodes) the replay's cluster holds: the arrival rate is set from it."""
    load: float = 0.9
    min_pods: int = 8
    max_pods: int = 1024
    size_decay: float = 0.7
    median_duration_s: float = 3600.0
    duration_sigma: float = 1.2
    min_duration_s: float = 60.0
    max_duration_s: float = 7 * 86_400.0
    required_share: float = 0.5

    def validate(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs: expected >= 1, got {self.jobs}")
        if self.min_pods < 1 or self.max_pods < self.min_pods:
            raise ValueError(f"pods: expected 1 <= min_pods <= max_pods, got "
                             f"{self.min_pods}..{self.max_pods}")
        if self.capacity_pods < self.max_pods:
            raise ValueError(f"capacity_pods: expected >= max_pods ({self.max_pods}), got "
                             f"{self.capacity_pods}")
        if self.load <= 0.0:
            raise ValueError(f"load: expected > 0, got {self.load}")
        if not 0.0 < self.min_duration_s <= self.median_duration_s <= self.max_duration_s:
            raise ValueError("durations: expected min <= median <= max, got "
                             f"{self.min_duration_s}, {self.median_duration_s}, "
                             f"{self.max_duration_s}")
        if not 0.0 <= self.required_share <= 1.0:
            raise ValueError(f"required_share: expected a fraction, got {self.required_share}")


def sizes(spec: TraceSpec) -> tuple[list[int], list[float]]:
    """The powers of two from min_pods to max_pods and their probabilities."""
    values = [1 << k for k in range(max(0, math.ceil(math.log2(spec.min_pods))),
                                    int(math.log2(spec.max_pods)) + 1)]
    weights = [v ** -spec.size_decay for v in values]
    total = sum(weights)
    return values, [w / total for w in weights]


def generate(spec: TraceSpec) -> list[Job]:
    """The trace's jobs in arrival order (arrival 0 is the first)."""
    spec.validate()
    rng = random.Random(spec.seed)
    values, probabilities = sizes(spec)
    drawn = []
    for _ in range(spec.jobs):
        pods = rng.choices(values, probabilities)[0]
        duration = math.exp(rng.gauss(math.log(spec.median_duration_s), spec.duration_sigma))
        duration = min(max(duration, spec.min_duration_s), spec.max_duration_s)
        priority = rng.choices(PRIORITIES, [p.share for p in PRIORITIES])[0]
        drawn.append((pods, duration, priority, rng.random() < spec.required_share))
    # Offered load = sum(pods x duration) / (span x capacity): the span follows from the
    # jobs drawn, so `load` holds exactly for this trace, not only in expectation.
    work = sum(pods * duration for pods, duration, _, _ in drawn)
    mean_gap = work / (spec.load * spec.capacity_pods) / spec.jobs
    jobs, now = [], 0.0
    for index, (pods, duration, priority, required) in enumerate(drawn):
        jobs.append(Job(index, round(now, 3), round(duration, 3), pods, priority, required))
        now += rng.expovariate(1.0 / mean_gap)
    return jobs


def median_pods(jobs: list[Job]) -> int:
    """The median job's size (the lower median: a size that occurs)."""
    ordered = sorted(job.pods for job in jobs)
    return ordered[(len(ordered) - 1) // 2]
