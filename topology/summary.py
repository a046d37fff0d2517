"""Per-level summary of a node set: how many domains each level has and how big they are.

Pure, from raw Node JSON, through the same domain tree placement uses: domain identity
is the path of values from the top (docs/design.md), and a node missing a level's label is a
`<unlabelled:NAME>` domain of its own from that level down.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from topology.presets import Preset
from topology.records import node_from_json
from topology.snapshot import build_tree


@dataclass(frozen=True)
class LevelSummary:
    key: str
    domains: int
    min_nodes: int
    median_nodes: float
    max_nodes: int
    unlabelled_nodes: int


def summarize_levels(nodes: list[dict[str, Any]], preset: Preset) -> list[LevelSummary]:
    tree = build_tree([node_from_json(node) for node in nodes], preset)
    rows = []
    for level, key in enumerate(tree.levels):
        sizes = np.bincount(tree.domain_of[level], minlength=tree.domain_count(level))
        counts = sorted(sizes.tolist()) or [0]
        unlabelled = sum(1 for i in range(len(tree.nodes))
                         if tree.node_path(i)[level].startswith("<unlabelled:"))
        rows.append(LevelSummary(key, tree.domain_count(level), counts[0],
                                 float(median(counts)), counts[-1], unlabelled))
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
