"""PNG plots of a kwok_placement report (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from topology.presets import PRESETS

LEVELS = PRESETS["aws"].keys[:4]


def _short(level: str) -> str:
    return level.rsplit("/", 1)[-1]


def plot_time_to_bound(report: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in report["runs"]:
        sizes = [g["size"] for g in run["gangs"]]
        ax.plot(sizes, [g["time_to_all_bound_s"] for g in run["gangs"]], marker="o",
                label=run["scheduler"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("gang size (pods x 8 GPUs)")
    ax.set_ylabel("time to all bound after the last pod exists (s)")
    ax.set_title(f"Time to all bound, {report['nodes']:,} KWOK nodes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_domains(report: dict[str, Any], path: Path) -> Path:
    runs = report["runs"]
    sizes = [g["size"] for g in runs[0]["gangs"]]
    fig, axes = plt.subplots(1, len(LEVELS), figsize=(4 * len(LEVELS), 4.2), sharex=True)
    width = 0.8 / (len(runs) + 1)
    x = np.arange(len(sizes))
    for ax, level in zip(axes, LEVELS, strict=True):
        for i, run in enumerate(runs):
            ax.bar(x + i * width, [g["domains_used"].get(level, 0) for g in run["gangs"]],
                   width, label=run["scheduler"])
        ax.bar(x + len(runs) * width, [g["lower_bound"].get(level) or 0
                                       for g in runs[0]["gangs"]],
               width, label="lower bound", color="grey", alpha=0.6)
        ax.set_title(_short(level))
        ax.set_xticks(x + width * len(runs) / 2, [str(s) for s in sizes])
        ax.set_xlabel("gang size")
        ax.set_yscale("log")
    axes[0].set_ylabel("domains used (log)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Domains used per level against the lower bound")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_heatmap(report: dict[str, Any], path: Path) -> Path:
    """Pods of the largest gang per layer-3 domain: rows are layer-2 domains, columns the
    racks inside them, both in tree order; the same grid for every scheduler."""
    runs = report["runs"]
    racks = sorted({rack for run in runs for rack in run["placement"]})
    parents = sorted({rack.rsplit("/", 1)[0] for rack in racks})
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        grid = np.full((len(parents), max(1, max(
            sum(1 for r in racks if r.rsplit("/", 1)[0] == p) for p in parents))), np.nan)
        for row, parent in enumerate(parents):
            for col, rack in enumerate(r for r in racks if r.rsplit("/", 1)[0] == parent):
                grid[row, col] = run["placement"].get(rack, 0)
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(parents)))
        ax.set_xticks(range(grid.shape[1]))
        used = sum(1 for v in run["placement"].values() if v)
        ax.set_title(f"{run['scheduler']}: {used} layer-3 domains")
        ax.set_xlabel("layer-3 domain within its layer-2")
        ax.set_ylabel("layer-2 domain (touched by any scheduler)")
        fig.colorbar(image, ax=ax, label="pods of the gang")
    fig.suptitle(f"Largest gang ({max(report['gangs'])} pods) over the domain tree")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(report: dict[str, Any], out: Path, stamp: str) -> list[Path]:
    return [plot_time_to_bound(report, out / f"time-to-bound-{stamp}.png"),
            plot_domains(report, out / f"domains-{stamp}.png"),
            plot_heatmap(report, out / f"heatmap-{stamp}.png")]
