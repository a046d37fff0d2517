"""One PNG per metric of a trace replay report (`benchmarks.simulate`, `benchmarks.churn`).

The report carries `gpus`, `series` (scheduler -> [t, allocated, partial, free,
fragmented] samples, `benchmarks.replay.Sample`) and `jobs` (scheduler -> job records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.replay import LAYER3


def _hours(report: dict[str, Any]) -> tuple[float, str]:
    """Seconds per plotted time unit: hours for the fleet simulation, else seconds."""
    return (3600.0, "h") if report["benchmark"] == "simulate" else (1.0, "s")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_allocation(report: dict[str, Any], path: Path) -> Path:
    scale, unit = _hours(report)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, series in report["series"].items():
        data = np.array(series, dtype=float)
        line = ax.step(data[:, 0] / scale, 100 * data[:, 1] / report["gpus"], where="post",
                       label=name)[0]
        if data[:, 2].any():
            ax.step(data[:, 0] / scale, 100 * data[:, 2] / report["gpus"], where="post",
                    linestyle=":", color=line.get_color(), label=f"{name}: partial jobs")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("GPUs allocated (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"GPU allocation over time, {report['nodes']:,} nodes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_waits(report: dict[str, Any], path: Path) -> Path:
    scale, unit = _hours(report)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, jobs in report["jobs"].items():
        waits = np.sort([j["start_s"] - j["arrival_s"] for j in jobs
                         if j["start_s"] is not None]) / scale
        if len(waits):
            ax.step(np.maximum(waits, 1e-3 / scale), np.arange(1, len(waits) + 1) / len(jobs),
                    where="post", label=f"{name} (never started: "
                    f"{sum(1 for j in jobs if j['start_s'] is None)})")
    ax.set_xscale("log")
    ax.set_xlabel(f"wait from arrival to all pods placed ({unit}, log)")
    ax.set_ylabel("share of all jobs started within")
    ax.set_title("Job wait (CDF; the gap to 1 is jobs never started)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_domains(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, jobs in report["jobs"].items():
        ratio = np.sort([j["domains_used"][LAYER3] / j["optimum"][LAYER3] for j in jobs
                         if j["start_s"] is not None and j["optimum"]])
        if len(ratio):
            ax.step(ratio, np.arange(1, len(ratio) + 1) / len(ratio), where="post",
                    label=name)
    ax.set_xlabel("layer-3 domains used / fewest possible at placement")
    ax.set_ylabel("share of started jobs")
    ax.set_title("Racks per job against its optimum (CDF)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_fragmentation(report: dict[str, Any], path: Path) -> Path:
    """Stranded GPUs as a share of all GPUs (the table gives them as a share of the free
    ones, which swings wildly when almost nothing is free)."""
    scale, unit = _hours(report)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, series in report["series"].items():
        data = np.array(series, dtype=float)
        ax.step(data[:, 0] / scale, 100 * data[:, 4] / report["gpus"], where="post",
                label=name)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("free GPUs in racks too small for the median job\n(% of all GPUs)")
    ax.set_title(f"Fragmentation (median job: {report['median_pods']} pods x 8 GPUs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_never_started(report: dict[str, Any], path: Path) -> Path:
    names = list(report["jobs"])
    sizes = sorted({j["pods"] for jobs in report["jobs"].values() for j in jobs})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(sizes))
    for i, name in enumerate(names):
        counts = [sum(1 for j in report["jobs"][name] if j["pods"] == s and j["start_s"] is None)
                  for s in sizes]
        ax.bar(x + i * width, counts, width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [str(s) for s in sizes])
    ax.set_xlabel("job size (pods x 8 GPUs)")
    ax.set_ylabel("jobs never started")
    ax.set_title("Jobs still waiting when the replay ended")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_all(report: dict[str, Any], out: Path, stamp: str) -> list[Path]:
    return [plot_allocation(report, out / f"{stamp}-allocation.png"),
            plot_waits(report, out / f"{stamp}-wait.png"),
            plot_domains(report, out / f"{stamp}-domains.png"),
            plot_fragmentation(report, out / f"{stamp}-fragmentation.png"),
            plot_never_started(report, out / f"{stamp}-never-started.png")]
