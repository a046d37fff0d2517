"""Replacement members next to their bound peers (a node died, a pod was evicted, a bind
failed after the solve).

A gang that is already running must not move: only the missing members are placed, one at
a time in rank order, each on the fitting node that sits closest to the running gang:
1. nearest to its rank neighbours (the bound members of the closest lower and higher rank):
   their node if it fits, else their bottom domain, else the nearest domain by distance
   (docs/design.md), so a ring all-reduce gains as few hops as possible;
2. then the smallest total distance to every bound member (stay inside the gang's domains);
3. then best fit (the node with the least room left for this shape);
4. then tree order.
Each placed member becomes a peer of the next. Distances are computed for all candidate
nodes at once from per-level peer counts. When the sequence cannot place every member it
must (minMember), the caller falls back to the whole-gang solver, whose Diagnosis says why.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from solver.assign import chosen_domains, measure
from solver.filters import fit_shape
from solver.gangrules import NODE, gang_rules, level_of_key
from solver.instance import NODE_LEVEL
from solver.reasons import Exclusion, ExclusionCode, FitCode
from solver.request import GangRequest
from solver.result import (
    Assignment,
    Diagnosis,
    LevelFit,
    Placement,
    SolverInfo,
    Unschedulable,
    describe_requests,
)
from topology.snapshot import DomainTree, IntArray, TopologySnapshot, render_path


def _shape_room(free_row: IntArray, requests: list[tuple[int, int]]) -> int:
    """Pods of a shape that fit in one node's free resources (requests: column, amount)."""
    room = min((int(free_row[column]) // amount for column, amount in requests), default=0)
    return max(room, 0)


def place_near(request: GangRequest, snapshot: TopologySnapshot, peers: Mapping[int, str],
               avoid: Mapping[str, frozenset[str]] | None = None,
               allowed: Mapping[str, np.ndarray] | None = None) -> Placement | None:
    """`peers`: rank -> node of the gang's bound members (members without a rank label
    take ranks past the gang's end: they count for closeness, not as rank neighbours);
    `avoid`: pod -> nodes where its bind just failed; `allowed`: pod -> the nodes it may
    use (its slice's domain, `slice_homes`). A required topology level keeps the
    members inside the peers' domain of that level. None when fewer than minMember
    members can be placed this way."""
    allowed = allowed or {}
    started = time.perf_counter()
    tree = snapshot.tree
    avoid = avoid or {}
    depth = tree.depth
    fits = [fit_shape(snapshot, shape) for shape in request.shapes]
    if any(fit.refusals for fit in fits):
        return None  # the whole-gang solver names the refusal
    rules = gang_rules(snapshot, request, fits)
    if rules.refusal is not None:
        return None
    capacity = [fit.capacity.copy() for fit in fits]
    # Caps among the gang's own pods (the running peers are placed pods: the caps and
    # filters already count them). Node caps now; level caps as members are placed.
    left: dict[tuple[int, int], dict[int, int]] = {}
    node_left: dict[int, IntArray] = {}
    for cap in rules.caps:
        for shape in cap.shapes:
            if cap.level == NODE:
                node_left[shape] = np.minimum(node_left.get(shape, cap.hi), cap.hi).copy()
                capacity[shape] = np.minimum(capacity[shape], node_left[shape])
            else:
                left[cap.level, shape] = {d: int(v) for d, v in enumerate(cap.hi.tolist())}
    peer_ids = [tree.index[node] for node in peers.values() if node in tree.index]
    homes = [tree.levels.index(request.required_level)] if request.required_level else []
    if rules.colocate_level is not None:
        homes.append(rules.colocate_level)
    if peer_ids:
        for level in homes:
            # All members inside one domain of the required level: the peers' (the one
            # most of them are in, should they ever disagree).
            home = int(np.bincount(tree.domain_of[level][peer_ids]).argmax())
            outside = tree.domain_of[level] != home
            for shape_capacity in capacity:
                shape_capacity[outside] = 0
        together = None
        if rules.colocate_node:
            together = np.zeros(len(tree.nodes), dtype=bool)
            together[int(np.bincount(peer_ids).argmax())] = True
        elif rules.groups:
            together = max(rules.groups, key=lambda mask: int(mask[peer_ids].sum()))
        if together is not None:
            for shape_capacity in capacity:
                shape_capacity[~together] = 0
    eligible = [c > 0 for c in capacity]
    requests = [[(snapshot.resources.index(r), a) for r, a in shape.requests.items()
                 if a > 0 and r in snapshot.resources] for shape in request.shapes]
    free = snapshot.free.copy()
    peer_nodes = {rank: tree.index[node] for rank, node in peers.items() if node in tree.index}
    counts = [np.bincount(tree.domain_of[level][list(peer_nodes.values())],
                          minlength=tree.domain_count(level)).astype(np.int64)
              for level in range(depth)]
    on_node = np.bincount(list(peer_nodes.values()), minlength=len(tree.nodes)).astype(np.int64)
    total = len(peer_nodes)
    assignments: list[Assignment] = []
    unplaced: list[str] = []
    for member in request.ordered_members():
        candidates = np.flatnonzero(capacity[member.shape] > 0)
        blocked = [tree.index[n] for n in avoid.get(member.pod, ()) if n in tree.index]
        candidates = candidates[~np.isin(candidates, blocked)]
        if member.pod in allowed:
            candidates = candidates[allowed[member.pod][candidates]]
        if not len(candidates):
            unplaced.append(member.pod)
            continue
        # Σ distance to every peer = total·(D+1) - Σ_levels peers sharing the domain
        # - peers on the very node (distance 0, not 1).
        shared = sum(counts[level][tree.domain_of[level][candidates]] for level in range(depth))
        spread = total * (depth + 1) - shared - on_node[candidates]
        neighbour = _neighbour_distance(tree.domain_of, depth, candidates, peer_nodes,
                                        member.rank)
        room = capacity[member.shape][candidates]
        best = int(candidates[np.lexsort((candidates, room, spread, neighbour))[0]])
        assignments.append(Assignment(member.pod, member.rank, tree.nodes[best].name,
                                      render_path(tree.node_path(best))))
        for column, amount in requests[member.shape]:
            free[best, column] -= amount
        if member.shape in node_left:
            node_left[member.shape][best] -= 1
        for shape, shape_requests in enumerate(requests):
            if eligible[shape][best]:
                room_now = _shape_room(free[best], shape_requests)
                if shape in node_left:
                    room_now = min(room_now, int(node_left[shape][best]))
                capacity[shape][best] = room_now
        for (level, shape), remaining in left.items():
            domain = int(tree.domain_of[level][best])
            if shape == member.shape:
                remaining[domain] -= 1
                if remaining[domain] <= 0:
                    capacity[shape][tree.domain_of[level] == domain] = 0
        peer_nodes[member.rank] = best
        for level in range(depth):
            counts[level][tree.domain_of[level][best]] += 1
        on_node[best] += 1
        total += 1
    if len(assignments) < min(request.min_member, len(request.members)):
        return None
    everyone = tuple(assignments) + tuple(
        Assignment(f"<peer:{rank}>", rank, tree.nodes[node].name, "")
        for rank, node in peer_nodes.items() if rank not in {a.rank for a in assignments})
    unbounded: dict[str, int | None] = dict.fromkeys((*tree.levels, NODE_LEVEL))
    metrics = measure(tree, everyone, unbounded)
    placed = sorted({tree.index[a.node] for a in assignments})
    return Placement(
        gang=request.name, assignments=tuple(sorted(assignments, key=lambda a: a.rank)),
        metrics=metrics,
        solver=SolverInfo("nearby", "FEASIBLE", time.perf_counter() - started,
                          note=f"{len(assignments)} member(s) placed next to "
                               f"{len(peers)} bound peer(s); metrics cover the whole gang"),
        chosen=chosen_domains(tree, placed), unplaced=tuple(unplaced))


def _neighbour_distance(domain_of: tuple[IntArray, ...], depth: int, candidates: IntArray,
                        peer_nodes: Mapping[int, int], rank: int) -> IntArray:
    """Per candidate, the distance to the nearest of the rank neighbours (the peers of the
    closest lower and higher rank); zeros when the gang has no peer yet."""
    below = max((r for r in peer_nodes if r < rank), default=None)
    above = min((r for r in peer_nodes if r > rank), default=None)
    nearest = np.full(len(candidates), depth + 1, dtype=np.int64)
    if below is None and above is None:
        return np.zeros(len(candidates), dtype=np.int64)
    for neighbour in (below, above):
        if neighbour is None:
            continue
        node = peer_nodes[neighbour]
        shared = sum((domain_of[level][candidates] == domain_of[level][node]).astype(np.int64)
                     for level in range(depth))
        distance = np.where(candidates == node, 0, depth + 1 - shared)
        nearest = np.minimum(nearest, distance)
    return nearest


def home_shortfall(request: GangRequest, snapshot: TopologySnapshot,
                   peers: Mapping[int, str]) -> Unschedulable:
    """Why missing members of a gang with a required level cannot join their peers: the
    peers' domain of that level lacks room (the rest of the cluster is no option)."""
    started = time.perf_counter()
    tree = snapshot.tree
    assert request.required_level is not None
    level = tree.levels.index(request.required_level)
    peer_ids = [tree.index[node] for node in peers.values() if node in tree.index]
    home = int(np.bincount(tree.domain_of[level][peer_ids]).argmax()) if peer_ids else 0
    fit = fit_shape(snapshot, request.shapes[0])
    inside = tree.domain_of[level] == home
    fits = int(fit.capacity[inside].sum())
    demand = min(request.min_member, len(request.members))
    diagnosis = Diagnosis(
        code=FitCode.UNSCHEDULABLE, demand=demand,
        shape=describe_requests(dict(request.shapes[0].requests)),
        total_nodes=len(tree.nodes), cluster_fits=int(fit.capacity.sum()),
        levels=(LevelFit(request.required_level, render_path(tree.paths[level][home]),
                         fits, demand),),
        excluded=dict(fit.excluded), required_level=request.required_level,
        unlabelled_nodes=len(tree.unlabelled))
    return Unschedulable(request.name, diagnosis,
                         SolverInfo("nearby", "INFEASIBLE", time.perf_counter() - started,
                                    note="the running members' required domain is full"))


def slice_homes(request: GangRequest, snapshot: TopologySnapshot,
                peer_groups: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray] | str:
    """Where each pending member of a sliced gang may go: its slice's domain, the one its
    bound peers are in; a slice with no bound member gets the domain (that can hold it
    whole, and, when exclusive, holds no other slice) nearest the gang's bound members,
    the tightest among equals. A str says which slice has nowhere to go."""
    tree = snapshot.tree
    key = request.subgroups[0].level
    level = level_of_key(tree, key)
    if level is None:
        return f"sub-groups on {key}: not a topology level of this cluster"
    def domain_of(node: int) -> int:
        return node if level == NODE else int(tree.domain_of[level][node])

    def mask_of(domain: int) -> np.ndarray:
        if level == NODE:
            mask = np.zeros(len(tree.nodes), dtype=bool)
            mask[domain] = True
            return mask
        return np.asarray(tree.domain_of[level] == domain)

    taken: dict[str, int] = {}
    for name, nodes in peer_groups.items():
        ids = [tree.index[n] for n in nodes if n in tree.index]
        if ids:
            taken[name] = int(np.bincount([domain_of(i) for i in ids]).argmax())
    all_peers = [tree.index[n] for nodes in peer_groups.values() for n in nodes
                 if n in tree.index]
    shape_of = {m.pod: m.shape for m in request.members}
    fits = [fit_shape(snapshot, shape) for shape in request.shapes]
    homes: dict[str, np.ndarray] = {}
    used = set(taken.values())
    for group in request.subgroups:
        home = taken.get(group.name)
        if home is None:
            shapes = sorted({shape_of[p] for p in group.members})
            room = np.minimum.reduce([fits[s].capacity for s in shapes])
            per_domain = room if level == NODE else tree.per_domain(level, room)
            candidates = [d for d in np.flatnonzero(per_domain >= len(group.members)).tolist()
                          if not (group.exclusive and d in used)]
            if not candidates:
                return (f"slice {group.name} ({len(group.members)} pods) has no {key} domain "
                        f"that holds it whole{' and no other slice' if group.exclusive else ''}")
            home = min(candidates, key=lambda d: _closeness(tree, mask_of(d), all_peers,
                                                            int(per_domain[d]), d))
            used.add(home)
        mask = mask_of(home)
        for pod in group.members:
            homes[pod] = mask
    return homes


def _closeness(tree: DomainTree, mask: np.ndarray, peers: Sequence[int], room: int,
               domain: int) -> tuple[int, int, int]:
    """Nearest first (least summed distance from one of its nodes to the bound members),
    then the tightest, then tree order."""
    first = int(np.flatnonzero(mask)[0])
    return (sum(tree.distance(first, peer) for peer in peers), room, domain)


def slice_shortfall(request: GangRequest, snapshot: TopologySnapshot,
                    why: str) -> Unschedulable:
    """Missing members of slices cannot be placed inside their slices' domains (the
    rest of the cluster is no option: a slice stays whole)."""
    tree = snapshot.tree
    fit = fit_shape(snapshot, request.shapes[0])
    demand = len(request.members)
    diagnosis = Diagnosis(
        code=FitCode.UNSCHEDULABLE, demand=demand,
        shape=describe_requests(dict(request.shapes[0].requests)),
        total_nodes=len(tree.nodes), cluster_fits=int(fit.capacity.sum()), levels=(),
        excluded=dict(fit.excluded), unlabelled_nodes=len(tree.unlabelled),
        refusals=(Exclusion(ExclusionCode.SLICE_HOME_FULL, why),))
    return Unschedulable(request.name, diagnosis,
                         SolverInfo("nearby", "INFEASIBLE", 0.0, note=why))
