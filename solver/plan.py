"""The common output of both placers: how many pods of each shape go on which node."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodePlan:
    per_shape: tuple[dict[int, int], ...]
    """per_shape[shape] = {node index: pods of that shape placed there}."""

    def nodes(self) -> set[int]:
        return {node for placed in self.per_shape for node in placed}

    def placed(self) -> tuple[int, ...]:
        return tuple(sum(placed.values()) for placed in self.per_shape)
