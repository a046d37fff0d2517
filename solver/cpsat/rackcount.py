"""The rack stage without search: fewest racks when the counts above them are fixed.

After the count stages, the gang's number of domains is fixed at every level above the
racks. What is left is to choose the set U of the racks' parents (level P) to use, within
those counts, and racks inside them. For a fixed U the answer is direct: every used parent
needs a rack, so take each one's largest rack (its *head*), then the largest of U's other
racks (its *extras*) until the gang fits. Choosing U is the hard part: CP-SAT's relaxation
spreads fractions over every parent, and a 90,000-pod gang on 110,000 nodes took it 2-5 s
to prove.

Threshold decomposition turns it into a dynamic programme. For a rack capacity t, give
each parent g

    a_g = 1 + (its extras above t),   b_g = head + (their capacity),   w_g = t*a_g - b_g.

If the smallest extra rack U uses has capacity t, U needs exactly
f_t(U) = sum a + ceil((N - sum b) / t) racks, which is ceil((N + sum w) / t): separable.
So with W_t = the least sum of w over the sets U the counts allow (a dynamic programme
over the tree, below), every U needs at least min_t ceil((N + W_t) / t) racks: a lower
bound, where each term drops only side conditions (enough racks of capacity t). The sets
that attain each W_t are placements too; counting their racks exactly gives incumbents.
An incumbent equal to the bound is optimal, with no search. Otherwise the caller hands
the best incumbent and the bound to CP-SAT.

The programme visits the parents in tree order. Its state is the number of domains used
so far at each level whose count does not already equal its number of viable domains
(a *saturated* level must use every viable domain, which is checked instead of counted),
and how far up the current ancestors are already used (they form a prefix from the top).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from topology.snapshot import DomainTree, IntArray

Int8Array = np.ndarray[tuple[int, ...], np.dtype[np.int8]]

TRIES = 6
"""Thresholds tried for the bound before handing over to CP-SAT."""
STATE_LIMIT = 400_000
"""Largest programme state (product of the counted levels' sizes) tried; beyond it the
caller's CP-SAT model decides alone."""
TRACE_LIMIT = 20_000_000
"""Largest trace kept for reading the chosen set back (state size x parents)."""

INF = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class RackCount:
    """The fewest racks found, the racks' loads that reach it, and the proven bound."""

    racks: int
    """The fewest racks of the placements found."""
    loads: dict[int, int]
    """rack -> pods, for a placement with `racks` racks."""
    bound: int
    """No placement within the counts uses fewer racks."""

    @property
    def proven(self) -> bool:
        return self.racks == self.bound


@dataclass(frozen=True)
class _Parents:
    """The viable parents in tree order with their racks, heads first, largest first."""

    ids: IntArray
    racks: list[IntArray]
    caps: list[IntArray]
    ancestors: IntArray
    """ancestors[i, l] = parent i's ancestor at level l (l < P)."""


def fewest_racks(tree: DomainTree, parent_level: int, viable: tuple[IntArray, ...],
                 counts: tuple[int, ...], racks: IntArray, rack_caps: IntArray,
                 need: int, tries: int = TRIES,
                 deadline: float | None = None) -> RackCount | None:
    """`viable[l]` and `counts[l]` for levels 0..parent_level; `racks` the candidate racks
    (tree order) with their capacities in pods. None when the programme would be too
    large, or no set within the counts holds the gang (the caller's model then decides).
    Past `deadline` (time.perf_counter) no further threshold is tried."""
    parents = _parents(tree, parent_level, viable[parent_level], racks, rack_caps)
    if parents is None:
        return None
    program = _Program.of(tree, parent_level, viable, counts, parents)
    if program is None:
        return None
    floor = counts[parent_level]
    roomiest = program.run(-np.asarray([int(c.sum()) for c in parents.caps], dtype=np.int64))
    best = _racks_of(parents, roomiest, need) if roomiest is not None else None
    if best is None:
        return None  # no set within the counts holds the gang
    bound = floor
    largest = max(int(c[0]) for c in parents.caps)
    for threshold in _around(best[2], largest)[:tries]:
        if bound >= best[0] or (deadline is not None and time.perf_counter() > deadline):
            break
        room_of = _room_above(parents, threshold)
        picked = program.run(-room_of)
        if picked is None:
            break
        # Any set U with k racks holds at most room(U) + t per extra rack, and room(U)
        # is at most the programme's maximum: k racks hold N only if
        # room + (k - floor) * t >= N.
        room = int(room_of[picked].sum())
        bound = max(bound, floor + math.ceil((need - room) / threshold))
        found = _racks_of(parents, picked, need)
        if found is not None and found[0] < best[0]:
            best = found
    return RackCount(best[0], best[1], min(bound, best[0]))


def _around(start: int, largest: int) -> list[int]:
    """Thresholds 1..largest, nearest `start` first (the size of the incumbent's last
    rack is where the bound is usually tightest)."""
    start = min(max(start, 1), largest)
    return sorted(range(1, largest + 1), key=lambda t: (abs(t - start), -t))


def _room_above(parents: _Parents, threshold: int) -> IntArray:
    """Per parent: its head plus what its other racks hold above `threshold` each. (The
    m largest of a list sum to the least, over t, of m*t + sum of max(0, x - t).)"""
    return np.asarray([int(c[0]) + int(np.maximum(c[1:] - threshold, 0).sum())
                       for c in parents.caps], dtype=np.int64)


def _parents(tree: DomainTree, level: int, viable: IntArray, racks: IntArray,
             rack_caps: IntArray) -> _Parents | None:
    owner = tree.parent_of[level + 1][racks]
    keep = np.isin(owner, viable)
    racks, owner, caps = racks[keep], owner[keep], rack_caps[racks[keep]]
    order = np.lexsort((-caps, owner))
    racks, owner, caps = racks[order], owner[order], caps[order]
    ids, starts = np.unique(owner, return_index=True)
    if len(ids) != len(viable):
        return None  # a viable parent without a rack: leave it to the model
    bounds = [*starts.tolist(), len(racks)]
    ancestors = np.empty((len(ids), level), dtype=np.int64)
    column = ids
    for upper in range(level - 1, -1, -1):
        column = tree.parent_of[upper + 1][column]
        ancestors[:, upper] = column
    return _Parents(ids, [racks[a:b] for a, b in itertools.pairwise(bounds)],
                    [caps[a:b] for a, b in itertools.pairwise(bounds)], ancestors)


def _racks_of(parents: _Parents, picked: IntArray, need: int
              ) -> tuple[int, dict[int, int], int] | None:
    """The fewest racks of the parents `picked` holding `need` pods, their loads and the
    capacity of the last rack taken: every parent's head, then the largest extras; each
    rack takes at least one pod."""
    heads = [(int(parents.caps[i][0]), int(parents.racks[i][0])) for i in picked.tolist()]
    extras = sorted(((int(c), int(r)) for i in picked.tolist()
                     for c, r in zip(parents.caps[i][1:], parents.racks[i][1:], strict=True)),
                    key=lambda item: (-item[0], item[1]))
    chosen = list(heads)
    total = sum(cap for cap, _ in heads)
    for item in extras:
        if total >= need:
            break
        chosen.append(item)
        total += item[0]
    if total < need or len(chosen) > need:
        return None
    last = chosen[-1][0] if len(chosen) > len(heads) else max(cap for cap, _ in heads)
    loads = {rack: cap for cap, rack in chosen}
    excess = total - need
    for cap, rack in sorted(chosen):  # take the excess back, smallest racks first
        give = min(excess, cap - 1)
        loads[rack] -= give
        excess -= give
    return len(chosen), loads, last


@dataclass
class _Program:
    """Least total weight of a set of parents within the counts, and that set."""

    parent_level: int
    counted: list[int]
    """Levels whose count is state (unsaturated levels above, and the parents' level)."""
    sizes: tuple[int, ...]
    targets: tuple[int, ...]
    saturated: list[bool]
    shared: list[int]
    """shared[i] = deepest level where parent i shares its ancestor with parent i-1."""

    @staticmethod
    def of(tree: DomainTree, level: int, viable: tuple[IntArray, ...],
           counts: tuple[int, ...], parents: _Parents) -> _Program | None:
        saturated = [counts[lvl] == len(viable[lvl]) for lvl in range(level)]
        for lvl in range(level):
            if saturated[lvl] and len(np.unique(parents.ancestors[:, lvl])) != len(viable[lvl]):
                return None  # a viable domain that must be used has no viable parent
        counted = [lvl for lvl in range(level) if not saturated[lvl]] + [level]
        sizes = tuple(counts[lvl] + 1 for lvl in counted)
        state = level + 1
        for size in sizes:
            state *= size
        if state > STATE_LIMIT or state * len(parents.ids) > TRACE_LIMIT:
            return None
        shared = [-1]
        for i in range(1, len(parents.ids)):
            same = parents.ancestors[i] == parents.ancestors[i - 1]
            depth = -1
            for lvl in range(level):
                if not same[lvl]:
                    break
                depth = lvl
            shared.append(depth)
        return _Program(level, counted, sizes, tuple(counts[lvl] for lvl in counted),
                        saturated, shared)

    def run(self, weights: IntArray) -> IntArray | None:
        """Indices of the parents in a least-weight set, or None if none fits the counts.

        State axis 0 is `h + 1`, h the deepest level whose current ancestor is used (-1:
        none); the others count domains used at the counted levels."""
        level = self.parent_level
        shape = (level + 1, *self.sizes)
        cost = np.full(shape, INF, dtype=np.int64)
        cost[(0,) + (0,) * len(self.sizes)] = 0
        trace: list[tuple[Int8Array, Int8Array]] = []
        for i, weight in enumerate(weights.tolist()):
            leaving = self.shared[i] if i else level - 1
            collapse = self._leave(cost, leaving) if i else np.zeros(shape, dtype=np.int8)
            taken = np.full(shape, -1, dtype=np.int8)
            best = cost[level].copy()  # h' = P-1 after taking (all ancestors now used)
            for h in range(-1, level):
                moved = self._shift(cost[h + 1], h)
                better = moved + weight < best
                best = np.where(better, moved + weight, best)
                taken[level][better] = h + 1
            cost[level] = best
            trace.append((collapse, taken))
        origin = self._leave(cost, -1)  # the last parent's ancestors are left too
        end = (0, *self.targets)
        if cost[end] >= INF // 2:
            return None
        return self._read_back(trace, int(origin[end]) if level > 0 else 0)

    def _leave(self, cost: IntArray, keep: int) -> Int8Array:
        """Moving on from the previous parent: the subtrees at levels below `keep` are
        left. A saturated level whose left domain went unused is infeasible; states that
        had ancestors used below `keep` forget them (h becomes at most keep). Returns, per
        state of h == keep, which h it came from (for reading back)."""
        level = self.parent_level
        for lvl in range(keep + 1, level):
            if self.saturated[lvl]:
                cost[: lvl + 1] = INF  # h < lvl: the left domain at lvl was never used
        origin = np.zeros(cost.shape, dtype=np.int8)
        if keep + 1 <= level - 1:
            stacked = cost[keep + 1:]
            where = np.argmin(stacked, axis=0)
            cost[keep + 1] = np.take_along_axis(stacked, where[None], axis=0)[0]
            origin[keep + 1] = (where + keep + 1).astype(np.int8)
            cost[keep + 2:] = INF
        return origin

    def _shift(self, plane: IntArray, h: int) -> IntArray:
        """`plane` (one h) moved by one at every counted level newly used when a parent
        is taken from h: levels h+1..P."""
        out = plane
        for axis, lvl in enumerate(self.counted):
            if lvl > h:
                moved = np.full_like(out, INF)
                index = [slice(None)] * out.ndim
                source = [slice(None)] * out.ndim
                index[axis], source[axis] = slice(1, None), slice(None, -1)
                moved[tuple(index)] = out[tuple(source)]
                out = moved
        return out

    def _read_back(self, trace: list[tuple[Int8Array, Int8Array]], h_index: int) -> IntArray:
        level = self.parent_level
        position = [h_index, *self.targets]
        picked: list[int] = []
        for i in range(len(trace) - 1, -1, -1):
            collapse, taken = trace[i]
            origin = int(taken[tuple(position)])
            if origin >= 0:
                picked.append(i)
                position[0] = origin
                for axis, lvl in enumerate(self.counted, start=1):
                    if lvl > origin - 1:
                        position[axis] -= 1
            if i:
                came = int(collapse[tuple(position)]) if position[0] == self.shared[i] + 1 \
                    and self.shared[i] + 1 <= level - 1 else position[0]
                position[0] = came
        return np.asarray(sorted(picked), dtype=np.int64)
