"""Per-level summary of a node set: how many domains each level has and how big they are.

Pure, from raw Node JSON. Domain identity is the path of values from the top (DESIGN §2),
so two layer-3 domains with the same value under different parents stay distinct.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from statistics import median
from typing import Any

from topology.presets import Preset, effective_levels

UNLABELLED = "<unlabelled>"


@dataclass(frozen=True)
class LevelSummary:
    key: str
    domains: int
    min_nodes: int
    median_nodes: float
    max_nodes: int
    unlabelled_nodes: int


def domain_path(labels: dict[str, str], levels: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(level.value(labels) or UNLABELLED for level in levels)


def summarize_levels(nodes: list[dict[str, Any]], preset: Preset) -> list[LevelSummary]:
    labels = [node.get("metadata", {}).get("labels") or {} for node in nodes]
    levels = effective_levels(preset, labels)
    paths = [domain_path(node_labels, levels) for node_labels in labels]
    rows = []
    for depth, level in enumerate(levels):
        sizes = Counter(path[: depth + 1] for path in paths)
        counts = sorted(sizes.values()) or [0]
        rows.append(
            LevelSummary(
                key=level.key,
                domains=len(sizes),
                min_nodes=counts[0],
                median_nodes=float(median(counts)),
                max_nodes=counts[-1],
                unlabelled_nodes=sum(1 for path in paths if path[depth] == UNLABELLED),
            )
        )
    return rows


def render_table(rows: list[LevelSummary]) -> str:
    header = f"{'level':<42} {'domains':>7} {'nodes/domain min':>16} {'median':>7} {'max':>6}"
    lines = [header, "-" * len(header)]
    for row in rows:
        note = f"  ({row.unlabelled_nodes} nodes unlabelled)" if row.unlabelled_nodes else ""
        lines.append(
            f"{row.key:<42} {row.domains:>7} {row.min_nodes:>16} {row.median_nodes:>7.0f} "
            f"{row.max_nodes:>6}{note}"
        )
    return "\n".join(lines)
