"""When faults happen: the plan (every kind once per window) and the thread that starts
and heals them while the checks go on."""

from __future__ import annotations

import contextlib
import random
from concurrent.futures import Future, ThreadPoolExecutor

from benchmarks.soak.faults import KINDS as FAULT_KINDS
from benchmarks.soak.faults import Context, Fault
from benchmarks.soak.state import Run

WINDOW_S = 600.0
"""Every fault kind is injected at least once per window of this length."""


def fault_plan(rng: random.Random, run_s: float) -> list[tuple[float, type[Fault]]]:
    """Each kind once per window. Blocking kinds run one at a time, so they get evenly
    spaced slots of the window in a random order (a random time within each slot) and
    do not push each other into the next window; the others come at random times.
    Faults stop at 85 % of the run so the last ones heal while the run still judges."""
    first, last = min(20.0, run_s * 0.1), run_s * 0.85
    plan = []
    start = first
    while start < last:
        end = min(start + WINDOW_S, last)
        blocking = [kind for kind in FAULT_KINDS if kind.blocking]
        rng.shuffle(blocking)
        slot = (end - start) / len(blocking)
        for i, kind in enumerate(blocking):
            plan.append((start + slot * (i + rng.uniform(0.0, 0.5)), kind))
        for kind in FAULT_KINDS:
            if not kind.blocking:
                plan.append((rng.uniform(start, max(start, end - 10)), kind))
        start += WINDOW_S
    return sorted(plan, key=lambda item: item[0])


class Faults:
    """Starts planned faults on their own thread (an apiserver restart takes seconds; the
    checks go on meanwhile), one blocking fault at a time; heals each when its time is up."""

    def __init__(self, ctx: Context, run: Run, plan: list[tuple[float, type[Fault]]]) -> None:
        self.ctx, self.run, self.plan = ctx, run, plan
        self.active: list[tuple[Fault, float]] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="soak-fault")
        self.busy: Future[None] | None = None
        self.blocking_busy = False
        self.entries: dict[int, int] = {}
        """id(fault) -> its row in run.faults."""
        self.last = run.args.minutes * 60.0 * 0.9

    @property
    def blocking(self) -> bool:
        return self.blocking_busy or any(f.blocking for f, _ in self.active)

    def step(self, now: float) -> None:
        if self.busy is not None and not self.busy.done():
            return
        if self.busy is not None:
            error = self.busy.exception()
            if error is not None:
                self.run.log(f"fault action failed: {error!r}")
            self.busy = None
        for fault, until in list(self.active):
            if now >= until:
                self.active.remove((fault, until))
                self.blocking_busy = fault.blocking
                self.busy = self.pool.submit(self._heal, fault)
                return
        if not self.plan or self.plan[0][0] > now:
            return
        if now > self.last:  # postponed past the fault window: it could not heal in time
            self.run.skipped += [kind.kind for _, kind in self.plan]
            self.plan.clear()
            return
        kind = self.plan[0][1]
        if kind.blocking and self.blocking:
            return  # one blocking fault at a time: postponed until the last one healed
        self.plan.pop(0)
        fault = kind(self.ctx)
        self.blocking_busy = fault.blocking
        self.busy = self.pool.submit(self._inject, fault, now)

    def _inject(self, fault: Fault, now: float) -> None:
        began = self.run.t()
        try:
            injected = fault.inject()
        finally:
            self.blocking_busy = False
        if not injected:
            self.plan.insert(0, (now + 2.0, type(fault)))  # e.g. no leader yet: retry
            return
        # A restart's inject returns once the component serves again: it ends then.
        end = self.run.t() + fault.duration
        self.active.append((fault, end))
        self.entries[id(fault)] = len(self.run.faults)
        self.run.faults.append((began, end, fault.kind, fault.detail))
        self.run.log(f"fault {fault.kind} {fault.detail} until {end:.0f}s")

    def _heal(self, fault: Fault) -> None:
        try:
            fault.heal()
            self._healed(fault, "")
        finally:
            self.blocking_busy = False

    def _healed(self, fault: Fault, note: str) -> None:
        """Logs the heal and records when it really ended (a heal can wait its turn
        behind an apiserver restart, or come early at the end of the run)."""
        self.run.log(f"healed {fault.kind}{note}")
        index = self.entries.get(id(fault))
        if index is not None:
            began, _, kind, detail = self.run.faults[index]
            self.run.faults[index] = (began, max(began, self.run.t()), kind, detail)

    def heal_all(self) -> None:
        if self.busy is not None:
            with contextlib.suppress(Exception):
                self.busy.result(300)
        for fault, _ in reversed(self.active):
            try:
                fault.heal()
                self._healed(fault, " (end of run)")
            except Exception as exc:  # heal the rest whatever one did
                self.run.log(f"heal {fault.kind} failed: {exc!r}")
        self.active.clear()
        self.pool.shutdown()


