"""What one soak run remembers, shared by the loop, the faults, the judge and the report."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from benchmarks.soak.invariants import GangState
from benchmarks.soak.workload import Gang, Single

MAX_WAIT_S = 300.0
"""A gang still waiting after this long is withdrawn (its user gave up)."""


@dataclass
class Tracked:
    gang: Gang
    state: GangState
    withdrawn: bool = False


@dataclass
class Run:
    """Everything one soak remembers."""

    args: argparse.Namespace
    start: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    gangs: dict[str, Tracked] = field(default_factory=dict)
    singles: list[Single] = field(default_factory=list)
    violations: list[tuple[float, str]] = field(default_factory=list)
    faults: list[tuple[float, float, str, str]] = field(default_factory=list)
    """(start, end, kind, detail) of each fault injected."""
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(t, gangs waiting, gangs bound and running, pods pending)."""
    population: list[tuple[float, int]] = field(default_factory=list)
    """(t, pods on the cluster): what the schedulers' caches hold, beside their RSS."""
    log_lines: list[str] = field(default_factory=list)
    unconfirmed: int = 0
    """What the watched view suggested broke but a fresh list did not show (a lagging
    watch); counted, not a violation."""
    stopped_at: float | None = None
    """When a signal stopped the run before its end (its result covers only so far)."""
    stop_signal: str = ""
    unjudged_s: float = 0.0
    """Seconds the judge paused: its view resyncing or more than LAG_LIMIT_S behind."""
    view_lags: list[float] = field(default_factory=list)
    """The judge's view's age at each beacon seen (observer.View)."""
    skipped: list[str] = field(default_factory=list)
    """Planned faults postponed past the fault window (blocking ones queue up)."""
    writes: list[tuple[float, str]] = field(default_factory=list)
    """(t, gang) of each scheduler request naming a gang's object (the audit log), binds
    excepted."""
    binds: list[tuple[float, str]] = field(default_factory=list)
    """(t, gang) of each bind of a gang's pod the scheduler sent (the audit log)."""

    def t(self) -> float:
        return time.monotonic() - self.start

    def log(self, line: str) -> None:
        text = f"[{self.t():7.1f}s] {line}"
        self.log_lines.append(text)
        print(text, file=sys.stderr, flush=True)

    def violation(self, what: str) -> None:
        self.violations.append((round(self.t(), 1), what))
        self.log(f"VIOLATION {what}")


