"""Exact small subset choice: `count` items whose capacities sum to at least `need` with
the least total (best fit), by dynamic programming over bitsets of reachable sums."""

from __future__ import annotations


def best_fit_subset(caps: list[int], count: int, need: int) -> list[int] | None:
    """Indices of exactly `count` items with sum >= need and the smallest such sum; among
    equal sums the earliest items (tree order). None when no such subset exists."""
    if count == 0:
        return [] if need <= 0 else None
    if count > len(caps):
        return None
    # history[i][k]: bitset of sums reachable with exactly k of the first i items.
    history = [[0] * (count + 1)]
    history[0][0] = 1
    for cap in caps:
        previous = history[-1]
        current = previous[:]
        for k in range(count, 0, -1):
            current[k] |= previous[k - 1] << cap
        history.append(current)
    reachable = history[-1][count] >> need
    if not reachable:
        return None
    total = need + ((reachable & -reachable).bit_length() - 1)
    chosen: list[int] = []
    k = count
    for i in range(len(caps), 0, -1):
        if (history[i - 1][k] >> total) & 1:
            continue  # reachable without item i-1: leave it, keeping earlier items
        chosen.append(i - 1)
        total -= caps[i - 1]
        k -= 1
    return sorted(chosen)
