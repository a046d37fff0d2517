"""How many pods of a shape each domain can hold, given per-domain caps.

Without caps a domain holds the sum of its nodes' capacities. A cap (at most `hi[d]` of
the gang's pods in domain d of some level, from anti-affinity or a spread constraint)
clips that level's sums, and every level above adds up the clipped sums of its children:
computed bottom-up, so each level's figure is exactly what the domain can hold with every
cap below it honoured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from topology.snapshot import DomainTree, IntArray

LevelCaps = Mapping[int, IntArray]
"""Tree level -> most pods of the shape per domain of that level."""


def level_sums(tree: DomainTree, node_capacity: IntArray, caps: LevelCaps) -> list[IntArray]:
    """Per level, what each domain can hold (clipped by the caps at and below it)."""
    depth = tree.depth
    sums: list[IntArray] = [np.zeros(0, dtype=np.int64)] * depth
    if depth == 0:
        return sums
    below = tree.per_domain(depth - 1, node_capacity)
    for level in range(depth - 1, -1, -1):
        if level < depth - 1:
            below = np.bincount(tree.parent_of[level + 1], weights=sums[level + 1],
                                minlength=tree.domain_count(level)).astype(np.int64)
        if level in caps:
            below = np.minimum(below, np.maximum(caps[level], 0))
        sums[level] = below
    return sums


def alone(tree: DomainTree, sums: list[IntArray]) -> list[IntArray]:
    """Per level, what each domain can hold as the gang's only domain at that level: its
    own figure, but no more than any ancestor's (a capped ancestor limits everything in
    it). Equal to `sums` without caps."""
    out: list[IntArray] = []
    for level, own in enumerate(sums):
        out.append(own if level == 0 else np.minimum(own, out[level - 1][tree.parent_of[level]]))
    return out


def merge_caps(found: list[tuple[int, IntArray]]) -> dict[int, IntArray]:
    """Several caps on one level: the tightest per domain."""
    out: dict[int, IntArray] = {}
    for level, hi in found:
        out[level] = np.minimum(out[level], hi) if level in out else hi
    return out


@dataclass(frozen=True, eq=False)
class RisingSpread:
    """A spread constraint whose minimum rises with the gang: in every eligible domain d
    of `level`, `m <= existing[d] + placed[d] <= m + max_skew` for one `m >= minimum`
    the model chooses (every eligible domain then needs pods). Only the detailed model
    takes it."""

    level: int
    shape: int
    existing: IntArray
    eligible: npt.NDArray[np.bool_]
    max_skew: int
    minimum: int


@dataclass(frozen=True)
class SliceRule:
    """Uniform slices: the gang's pods come in slices of `size` consecutive ranks, each
    inside one domain of `level` (at most one per domain when `exclusive`). For one pod
    shape that is exactly: every domain of `level` holds a multiple of `size` pods, which
    the models add as `pods(d) == size * k(d)` with the domain's capacity clipped to a
    multiple of `size` (`slice_caps`)."""

    level: int
    size: int
    exclusive: bool = False


def slice_caps(tree: DomainTree, sums: list[IntArray], rule: SliceRule) -> IntArray:
    """Per domain of the slice level, the most pods it can hold in whole slices."""
    room = sums[rule.level]
    hi = (room // rule.size) * rule.size
    return np.minimum(hi, rule.size) if rule.exclusive else hi
