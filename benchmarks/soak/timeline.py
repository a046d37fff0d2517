"""The soak's timeline plot: gangs waiting and bound over time, each fault a mark."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"leader-kill": "red", "leader-freeze": "darkred", "apiserver-restart": "blue",
           "etcd-restart": "navy", "nodes-deleted": "orange", "nodes-notready": "gold",
           "nodes-cordoned": "peru", "throttle-storm": "purple", "binds-refused": "magenta",
           "partition": "black"}


def plot(timeline: list[tuple[float, int, int, int]],
         faults: list[tuple[float, float, str, str]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 5))
    if timeline:
        t = [row[0] / 60 for row in timeline]
        ax.plot(t, [row[1] for row in timeline], label="gangs waiting", color="tab:orange")
        ax.plot(t, [row[2] for row in timeline], label="gangs bound (running)",
                color="tab:green")
    top = max([max(r[1], r[2]) for r in timeline] or [1]) + 1
    shown: set[str] = set()
    for start, end, kind, _ in faults:
        ax.axvspan(start / 60, max(end, start + 1) / 60, ymin=0.92, ymax=1.0,
                   color=COLOURS.get(kind, "grey"), alpha=0.8,
                   label=None if kind in shown else kind)
        ax.axvline(start / 60, color=COLOURS.get(kind, "grey"), alpha=0.25, linewidth=0.8)
        shown.add(kind)
    ax.set_ylim(0, top * 1.12)
    ax.set_xlabel("minutes")
    ax.set_ylabel("gangs")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7, ncol=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
