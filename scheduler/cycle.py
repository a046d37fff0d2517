"""The scheduling cycle: every ready gang in queue order, then the single pods.

One gang's cycle, in named phases (kube-scheduler's schedule_one.go, at gang
granularity), each a method below:

    admit -> solve -> assume -> [volumes] -> bind -> settle -> report
             \\-- does not fit --> [preempt] -------------> report (once per reason)

- admit: an invalid gang is reported; one without enough ungated members waits; one that
  did not fit waits until something it depends on moved (`_worth_solving`).
- solve: the whole gang, or only the missing members next to the running ones.
- assume: every chosen pod takes its room in the cache before any bind returns.
- volumes: claims waiting for their first consumer get their volume (a static volume's
  claimRef, or the selected-node annotation); the gang is bound once all are Bound, its
  room kept meanwhile (`_finish_volume_waits`), as kube-scheduler's PreBind waits.
- bind: all pods concurrently; binds refused because this instance stopped leading are
  not failures and leave the rest to the new leader.
- settle: failed binds are forgotten (their room freed, their node remembered) and the
  gang repaired next cycle, at once.
- preempt: a gang that does not fit evicts the cheapest lower-priority victims and holds
  the room they leave (`scheduler.preemption`); its members are bound as that room frees.
- report: `scheduler.report`, the one place a decision becomes Events, status and a log.

Collaborators (cluster cache, object lookup, binder, recorder, clock, leadership) are
passed in; nothing here talks to the API server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from kube.resources import CSI_NODES, PDBS, PVCS, PVS, STORAGE_CLASSES, ObjectRef
from scheduler.cache import ClusterCache
from scheduler.collaborators import (
    Binder,
    BindResult,
    Clock,
    Evictor,
    EvictResult,
    Leadership,
    Recorder,
    VolumeWriter,
)
from scheduler.config import Config
from scheduler.discovery import Claims, discover
from scheduler.gang import Gang, GangKey, GangSpec, creation_epoch
from scheduler.metrics import SchedulerMetrics
from scheduler.preemption import (
    PREEMPT_TIMEOUT_S,
    PROTECT_S,
    InFlight,
    budgets_from,
    candidates,
    describe,
    may_preempt,
)
from scheduler.report import (
    REPORT_INTERVAL_S,
    EventReason,
    Reporter,
    not_placed,
    placed,
    preempting,
    timed_out,
)
from scheduler.request import (
    no_volume_rules,
    peer_groups,
    planned_members,
    request_for,
    shape_of,
)
from scheduler.singles import SinglePods
from scheduler.sources import GangSource, ObjectLookup, sources
from scheduler.state import Attempt, GangPhase, GangRecord, VolumeWait
from scheduler.volumes import BIND_TIMEOUT_S, VolumeView, view_from
from solver.errors import BadRequest
from solver.explain import PlacementExplanation, explain_placement, remedies
from solver.nearby import home_shortfall, place_near, slice_homes, slice_shortfall
from solver.preempt import Candidate, NoPreemption, Preemption, VictimSet, choose_victims
from solver.reasons import FitCode
from solver.request import GangRequest, Member, SolverConfig
from solver.result import Placement, Unschedulable
from solver.solve import solve
from topology.records import PodRecord
from topology.snapshot import TopologySnapshot

log = logging.getLogger("phalanx.scheduler")
PRUNE_EVERY_S = 10.0
RETAIN_S = 300.0
"""How long a placed gang's record outlives its pods."""
HOLD_S = 600.0
"""How long room is held for members a gang's controller creates later (JobSet's and
LeaderWorkerSet's followers, InOrder replicatedJobs): past it, they are placed next to
their peers when they come, with whatever room is left."""
BIND_BACKOFF_S = (1.0, 60.0)
"""First and longest wait before members whose binds failed are bound again: a retry on
nodes not refused yet comes after the first; one that could only use nodes already
refused doubles the wait (kube-scheduler backs a pod off 1-10 s; a gang's retry is a
burst of binds, so it waits up to a minute). Found by the soak (issue 20): a
ValidatingAdmissionPolicy refusing a third of the nodes had 20 members of a 64-pod gang
re-bound every 0.2 s, and the racks it needed were given to later gangs meanwhile."""
BIND_HOLD_MARGIN_S = 5.0
SETTLE_S = 10.0
"""A group sized by the members seen waits this long after its newest member appeared
before its first placement (a 512-pod group is created in a few seconds here)."""
VOLUME_OBJECTS = (PVCS, PVS, STORAGE_CLASSES, CSI_NODES)


class Scheduler:
    def __init__(self, config: Config, cluster: ClusterCache, objects: ObjectLookup,
                 binder: Binder, recorder: Recorder, clock: Clock, leadership: Leadership,
                 metrics: SchedulerMetrics,
                 gang_sources: Sequence[GangSource] | None = None,
                 volume_writer: VolumeWriter | None = None,
                 evictor: Evictor | None = None) -> None:
        self.config, self.cluster, self.objects = config, cluster, objects
        self.volume_writer, self.evictor = volume_writer, evictor
        self.protected: dict[str, float] = {}
        """Victim unit name -> Clock.monotonic() until which a PDB's refusal keeps it out."""
        self.gang_of: Mapping[str, GangKey] = {}
        """This cycle's pod key -> gang of the placed pods (preemption's victim units)."""
        self.binder, self.clock, self.leadership, self.metrics = (binder, clock, leadership,
                                                                  metrics)
        self.sources = tuple(gang_sources if gang_sources is not None
                             else sources(config.accelerators))
        self.reporter = Reporter(recorder, clock)
        self.singles = SinglePods(cluster, binder, self.reporter, metrics,
                                  preempt=self._preempt_single)
        self.single_flights: dict[str, tuple[frozenset[tuple[str, str]], float]] = {}
        """Pod key -> (victims (key, uid) evicted for it, deadline): one at a time."""
        self.records: dict[GangKey, GangRecord] = {}
        self.claims = Claims()
        """Each pod's gang claim, kept between cycles while its record is unchanged."""
        self.solver_config = SolverConfig(algorithm=config.algorithm,
                                          time_limit_s=config.solver_time_limit_s)
        self._pruned_at = -1e18
        self._view: VolumeView | None = None

    # -- one cycle --------------------------------------------------------------------
    def cycle(self) -> None:
        self._view = None
        self._finish_volume_waits()
        pods, assumed = self.cluster.all_pods()
        finished = self.cluster.finished_pods()
        name = self.config.scheduler_name
        found = discover([*pods, *finished] if finished else pods, assumed,
                         ours=lambda p: p.scheduler_name == name,
                         sources=self.sources, objects=self.objects, claims=self.claims)
        self.gang_of = found.gang_of
        if finished:
            kept = found.finished_kept
            self.cluster.forget_finished(p for p in finished if p.key not in kept)
        for gang in sorted(found.gangs, key=lambda g: (-g.priority, g.created, g.key)):
            if not self.leadership.leading():
                return  # lost the Lease mid-cycle: the new leader takes it from here
            self.schedule_gang(gang, found.source_of.get(gang.key, ""))
        live = {p.key for p in pods}
        self._prune({gang.key for gang in found.gangs}, live)
        self.claims.keep(live)
        if found.singles and self.leadership.leading():
            singles = sorted(found.singles, key=lambda p: (-p.priority, p.created, p.key))
            self.singles.schedule(singles, self.cluster.snapshot(
                frozenset(p.key for p in singles)))
        unreadable = self.cluster.unreadable(name)
        for bad in unreadable:
            self.reporter.pod_unreadable(ObjectRef("Pod", bad.namespace, bad.name, bad.uid),
                                         bad.message)
        self.reporter.forget_pods({p.key for p in found.singles} | {b.key for b in unreadable})

    def schedule_gang(self, gang: Gang, source: str = "") -> None:
        record = self._track(gang, source)
        self._check_timeout(gang, record)
        if not self._admit(gang, record):
            return
        snapshot = self.cluster.snapshot(frozenset(p.key for p in gang.pending),
                                         own_holds=str(gang.key))
        claims = any(p.volumes.claims for p in gang.pending)
        view = self._volumes(snapshot) if claims else None
        nodes, freed = self.cluster.versions()
        record.attempt = Attempt(nodes, freed, gang.members_version, self.clock.monotonic(),
                                 volumes=self.cluster.generation_of(VOLUME_OBJECTS))
        try:
            # Members created later are planned with the first ones, not with replacements.
            request = request_for(gang, snapshot.anti_affinity_keys,
                                  view.rules_for if view is not None else no_volume_rules,
                                  planned=not gang.peers)
            result = self._solve(gang, record, request, snapshot)
        except BadRequest as exc:
            self._invalid(gang, record, str(exc))
            return
        previous = record.result
        record.result, record.solved_at = result, self.clock.time()
        self.metrics.solve_seconds.labels(result.status).observe(result.solver.solve_s)
        if isinstance(result, Unschedulable):
            if not self._preempt(gang, record, request, snapshot, result):
                self._unschedulable(gang, record, result, len(snapshot.nodes))
            return
        record.preemption_note = ""
        chosen = self._assume(gang, result)
        self._hold(gang, record, result)
        waits = view is not None and self._wait_for_volumes(gang, record, result, chosen, view)
        if not waits:
            record.move(GangPhase.BINDING, self.clock.time())
            results, bind_s = self.binder.bind_all([(pod.key, node) for pod, node in chosen])
            self._settle(gang, record, result, results, bind_s)
        # After the binds, off their path: why it went there, for explain.
        record.explanation, record.remedies = self._explain(request, snapshot, result), ()
        if result.solver.algorithm == "nearby":
            record.result = _with_running(previous, result)

    # -- phases -----------------------------------------------------------------------
    def _track(self, gang: Gang, source: str) -> GangRecord:
        record = self.records.get(gang.key)
        if record is None:
            record = self.records[gang.key] = GangRecord(gang.key)
            record.move(GangPhase.WAITING, self.clock.time())
        record.observe(gang, source)
        self.reporter.flush(record)
        return record

    def _admit(self, gang: Gang, record: GangRecord) -> bool:
        """Whether to solve the gang now; reports why not when there is news."""
        if gang.spec.error is not None:
            self._invalid(gang, record, gang.spec.error)
            return False
        record.error = ""
        if gang.spec.waiting is not None:
            record.move(GangPhase.WAITING, self.clock.time())
            return False
        if gang.spec.size_seen and gang.bound == 0 and self._still_arriving(gang):
            record.move(GangPhase.WAITING, self.clock.time())
            record.waiting_for = (f"members still arriving: its size is the members seen "
                                  f"({len(gang.pending) + len(gang.gated)}), so it is placed "
                                  f"once none has been created for {SETTLE_S:.0f} s")
            return False
        if not gang.ready:
            # Members still gated are not placeable; they are named, not counted.
            waiting_for_gates = len(gang.pending) + len(gang.gated) >= gang.needed
            record.move(GangPhase.GATED if gang.gated and waiting_for_gates
                        else GangPhase.WAITING, self.clock.time())
            return False
        if record.phase is GangPhase.REPAIRING and self.clock.monotonic() < record.binds_retry_at:
            return False  # backing off after failed binds; their room is held meanwhile
        return self._worth_solving(gang, record)

    def _still_arriving(self, gang: Gang) -> bool:
        """A group whose size is only the members seen is first placed once no member has
        been created for SETTLE_S: placed while its pods were still being created, it was
        a whole gang of 4 and then 4 bound members of 16 whose other 12 could not join
        them in their required rack (found by the soak, issue 20)."""
        members = (*gang.pending, *gang.gated)
        newest = max((creation_epoch(p.created) or 0.0 for p in members), default=0.0)
        return self.clock.time() - newest < SETTLE_S

    def _worth_solving(self, gang: Gang, record: GangRecord) -> bool:
        """A gang that did not fit is solved again only when something it depends on
        moved: its members or spec, the nodes, or (merely Unschedulable) room freed or
        the retry time passed. An Unresolvable gang could not fit even on an empty
        cluster, so only new nodes or a changed gang can help it."""
        last = record.attempt
        if last is None or last.code is None or record.phase is not GangPhase.UNSCHEDULABLE:
            return True
        nodes, freed = self.cluster.versions()
        if last.members != gang.members_version or last.nodes != nodes:
            return True
        if last.volumes != self.cluster.generation_of(VOLUME_OBJECTS):
            return True  # a claim, volume or class changed
        if last.code is FitCode.UNRESOLVABLE:
            return False
        retry_due = self.clock.monotonic() - last.at > self.config.unschedulable_retry_s
        return last.freed != freed or retry_due

    def _solve(self, gang: Gang, record: GangRecord, request: GangRequest,
               snapshot: TopologySnapshot) -> Placement | Unschedulable:
        """A gang with running members gets its missing ones next to them (never moving
        the running ones); a gang with none is solved whole."""
        if not gang.peers:
            return solve(request, snapshot, self.solver_config)
        request.validate(snapshot.levels)
        peers = {rank: node for rank, node in gang.peers if node in snapshot.tree.index}
        if not peers:  # the running members' nodes are gone: nothing to be near
            return solve(request, snapshot, self.solver_config)
        allowed = None
        if request.subgroups:  # a member replaced inside its slice's domain, or pending
            homes = slice_homes(request, snapshot, peer_groups(gang))
            if isinstance(homes, str):
                return slice_shortfall(request, snapshot, homes)
            allowed = homes
        near = place_near(request, snapshot, peers, record.failed_nodes, allowed)
        if near is None and record.failed_nodes:
            # Avoiding nodes where binds failed must never be what keeps a gang pending
            # (they stay remembered: a retry refused on them again backs off longer).
            near = place_near(request, snapshot, peers, allowed=allowed)
        if near is not None:
            return near
        if allowed is not None:
            return slice_shortfall(request, snapshot, (
                f"missing members of {len(request.subgroups)} slice(s) do not fit inside "
                f"their slices' {request.subgroups[0].level} domains"))
        if request.required_level is not None:
            return home_shortfall(request, snapshot, peers)
        # Not even one node fits some member: the whole-gang solver says why.
        return solve(request, snapshot, self.solver_config)

    def _assume(self, gang: Gang, placement: Placement) -> list[tuple[PodRecord, str]]:
        """The room is taken before any bind returns (planned members are held apart)."""
        by_name = {p.name: p for p in gang.pending}
        chosen = [(by_name[a.pod], a.node) for a in placement.assignments
                  if a.pod in by_name]
        for pod, node in chosen:
            self.cluster.assume(pod, node)
        return chosen

    def _hold(self, gang: Gang, record: GangRecord, placement: Placement) -> None:
        """Room for the members the controller creates later: held where the placement
        put them, until they exist (then only for those still missing) or HOLD_S passed.
        Each placement of the gang narrows the hold to the members still to come."""
        owner = str(gang.key)
        planned = planned_members(gang)
        if not gang.peers:
            entries = tuple((replace(planned[a.pod].pod, name=a.pod), a.node)
                            for a in placement.assignments if a.pod in planned)
            deadline = self.clock.monotonic() + HOLD_S
        else:
            held = self.cluster.held(owner)
            if held is None:
                return
            entries = tuple((pod, node) for pod, node in held.entries if pod.name in planned)
            deadline = held.deadline
        self.cluster.hold(owner, entries, deadline)
        record.held = len(entries)
        if entries:
            log.info("gang=%s decision=hold members=%d until=+%.0fs", gang.key, len(entries),
                     deadline - self.clock.monotonic())

    def _hold_refused(self, gang: Gang, record: GangRecord,
                      refused: list[tuple[PodRecord, str]]) -> None:
        """Members whose binds failed keep the room they were given until their retry,
        beside anything the gang already holds: a gang partly bound must not find its
        domain given to later gangs while it backs off (its retry may try elsewhere
        first; the next placement narrows the hold again)."""
        owner = str(gang.key)
        held = self.cluster.held(owner)
        names = {pod.name for pod, _ in refused}
        kept = tuple(e for e in held.entries if e[0].name not in names) if held else ()
        deadline = max(held.deadline if held else 0.0,
                       record.binds_retry_at + BIND_HOLD_MARGIN_S)
        self.cluster.hold(owner, kept + tuple(refused), deadline)

    # -- preemption -------------------------------------------------------------------
    def _preempt(self, gang: Gang, record: GangRecord, request: GangRequest,
                 snapshot: TopologySnapshot, result: Unschedulable) -> bool:
        """A gang that does not fit evicts the cheapest lower-priority victims
        (`scheduler.preemption`); True while a preemption is under way for it (its room
        held, nothing more to report). A gang that may not preempt gets the what-if in
        its remedies instead."""
        now = self.clock.monotonic()
        flight = record.preemption
        if flight is not None and record.phase is GangPhase.PREEMPTING:
            leaving = any(self.cluster.has_pod(key, uid) for key, uid in flight.victims)
            if now < flight.deadline and leaving:
                self._bind_freed(gang, record, snapshot)
                return True  # victims still terminating: the room waits for them
            self.cluster.hold(str(gang.key), (), 0.0)
            log.info("gang=%s decision=preemption-ended victims_left=%d message=%r", gang.key,
                     sum(1 for key, uid in flight.victims if self.cluster.has_pod(key, uid)),
                     "victims gone but the gang still does not fit" if now < flight.deadline
                     else f"not bound within {PREEMPT_TIMEOUT_S:.0f}s; room released")
        if self.evictor is None or result.diagnosis.code is FitCode.UNRESOLVABLE:
            record.preemption_note = ""
            return False
        allowed = may_preempt(gang)
        pods, _ = self.cluster.all_pods()
        budgets = budgets_from(self.cluster.objects_of(PDBS).values())
        # Units of its own priority too: not victims, but the what-if may name them.
        units, notes = candidates(pods, self.gang_of, gang.priority + 1, gang.key, budgets,
                                  self.protected, now)
        accelerators = frozenset(self.config.accelerators)
        lower = [u for u in units if u.priority < gang.priority]
        if not allowed or not lower:
            self._what_if(gang, record, request, snapshot, units, allowed)
            return False
        record.preemption_note = ""
        outcome = choose_victims(request, snapshot, lower, gang.priority, self.solver_config,
                                 accelerators)
        if isinstance(outcome, NoPreemption):
            self.metrics.preemptions.labels(outcome.code.value).inc()
            record.preemption_note = "; ".join([f"no preemption: {outcome.message}", *notes])
            return False
        return self._evict(gang, record, outcome, now)

    def _bind_freed(self, gang: Gang, record: GangRecord, snapshot: TopologySnapshot) -> None:
        """Members whose held node its victims have left are bound there at once, so a
        controller recreating the victims (and another scheduler placing them) cannot
        take that room back; the rest of the room is being vacated already."""
        owner = str(gang.key)
        held = self.cluster.held(owner)
        if held is None:
            return
        pending = {p.name: p for p in gang.pending}
        column = {name: i for i, name in enumerate(snapshot.resources)}
        free = {n: snapshot.free[i] for n, i in snapshot.tree.index.items()}
        ready, rest = [], []
        for pod, node in held.entries:
            room = free.get(node)
            member = pending.get(pod.name)
            if member is None or room is None or any(
                    amount > 0 and (res not in column or room[column[res]] < amount)
                    for res, amount in member.requests.items()):
                rest.append((pod, node))
                continue
            room = room.copy()
            for res, amount in member.requests.items():
                if res in column:
                    room[column[res]] -= amount
            free[node] = room
            ready.append((member, node))
        if not ready:
            return
        self.cluster.hold(owner, tuple(rest), held.deadline)
        for pod, node in ready:
            self.cluster.assume(pod, node)
        results, _ = self.binder.bind_all([(p.key, n) for p, n in ready])
        bound = [r for r in results if r.ok]
        self.cluster.settle_binds(results)
        self.metrics.pods_bound.labels("gang").inc(len(bound))
        by_key = {p.key: p for p, _ in ready}
        for r in bound:
            self.reporter.pod_placed(by_key[r.pod], r.node)
        log.info("gang=%s decision=bind-freed bound=%d still_held=%d", gang.key, len(bound),
                 len(rest))

    def _what_if(self, gang: Gang, record: GangRecord, request: GangRequest,
                 snapshot: TopologySnapshot, units: Sequence[Candidate], allowed: bool) -> None:
        """For a gang that may not preempt: the cheapest set that would make room (among
        pods of its own priority or lower), as advice a platform team can act on."""
        now = self.clock.monotonic()
        if not units or now - record.what_if_at < REPORT_INTERVAL_S:
            return  # advice, not a decision: at most once per report interval
        record.what_if_at = now
        found = choose_victims(request, snapshot, units, gang.priority + 1, self.solver_config,
                               frozenset(self.config.accelerators))
        if isinstance(found, Preemption):
            why = ("its pods have preemptionPolicy: Never" if not allowed else
                   "no running pod has a lower priority (equal priority never preempts)")
            record.preemption_note = (f"evicting {describe(found.chosen)} would make room; "
                                      f"not done: {why}")

    def _evict_victims(self, chosen: VictimSet, now: float
                       ) -> tuple[frozenset[tuple[str, str]], list[EvictResult]]:
        """Evicts every victim pod; (key, uid) of those evicted, and the refusals (a PDB's
        429 keeps its unit out of the choice for PROTECT_S)."""
        assert self.evictor is not None
        results = self.evictor.evict(sorted(chosen.pod_keys))
        refused = [r for r in results if not r.ok]
        unit_of = {p.key: c.name for c in chosen.victims for p in c.pods}
        self.protected = {unit: until for unit, until in self.protected.items()
                          if until > now}  # expired ones would pile up for ever
        for r in refused:
            if r.budget:
                self.protected[unit_of[r.pod]] = now + PROTECT_S
        uid_of = {p.key: p.uid for c in chosen.victims for p in c.pods}
        evicted = frozenset((r.pod, uid_of[r.pod]) for r in results if r.ok)
        self.metrics.preemptions.labels("Preempted" if evicted else "EvictionRefused").inc()
        if evicted:
            self.metrics.preemption_victims.observe(len(chosen.victims))
        return evicted, refused

    def _evict(self, gang: Gang, record: GangRecord, outcome: Preemption, now: float) -> bool:
        assert self.evictor is not None
        chosen = outcome.chosen
        evicted, refused = self._evict_victims(chosen, now)
        if not evicted:
            record.preemption_note = "no preemption: every eviction was refused: " + "; ".join(
                f"{r.pod}: {r.status} {r.reason}"[:160] for r in refused[:3])
            return False
        planned = planned_members(gang)
        by_name = {p.name: p for p in gang.pending}
        entries = tuple((by_name[a.pod] if a.pod in by_name else
                         replace(planned[a.pod].pod, name=a.pod), a.node)
                        for a in outcome.placement.assignments
                        if a.pod in by_name or a.pod in planned)
        deadline = now + PREEMPT_TIMEOUT_S
        self.cluster.hold(str(gang.key), entries, deadline)
        errors = self.evictor.nominate([(p.key, node) for p, node in entries
                                        if p.name in by_name])
        record.preemption = InFlight(chosen, outcome.runner_up, outcome.status, evicted,
                                     tuple(f"{r.pod}: {r.status} {r.reason}"[:160]
                                           for r in refused), deadline, outcome.solve_s,
                                     self.clock.time())
        record.move(GangPhase.PREEMPTING, self.clock.time())
        victims = [p for c in chosen.victims for p in c.pods if (p.key, p.uid) in evicted]
        message = (f"preempting {describe(chosen)} for gang {gang.key} (priority "
                   f"{gang.priority}), chosen in {outcome.solve_s:.3f}s ({outcome.status}); "
                   f"room held for {len(entries)} pod(s) until the victims are gone")
        if refused:
            message += f"; {len(refused)} eviction(s) refused"
        if errors:
            message += f"; nominatedNodeName not written for {len(errors)} pod(s)"
        self.reporter.report(gang, record, preempting(
            gang, message, victims, f"Preempted by gang {gang.key} (priority {gang.priority}) "
                                    f"to make room for it: {chosen.cost.render()}"))
        return True

    def _preempt_single(self, pod: PodRecord, snapshot: TopologySnapshot) -> str | None:
        """The per-pod path's preemption, as kube-scheduler's for one pod: the cheapest
        victims, evicted; the pod nominated to the node they free (its room is then
        held by the nomination). The message to report, or None when it does not."""
        if self.evictor is None or pod.preemption_policy == "Never":
            return None
        now = self.clock.monotonic()
        flight = self.single_flights.get(pod.key)
        if flight is not None and now < flight[1] and any(
                self.cluster.has_pod(key, uid) for key, uid in flight[0]):
            return f"preempting: waiting for {len(flight[0])} victim pod(s) to terminate"
        self.single_flights.pop(pod.key, None)
        pods, _ = self.cluster.all_pods()
        units, _ = candidates(pods, self.gang_of, pod.priority, GangKey("Pod", pod.namespace,
                                                                       pod.name),
                              budgets_from(self.cluster.objects_of(PDBS).values()),
                              self.protected, now)
        if not units:
            return None
        request = GangRequest(pod.key, (shape_of(pod, snapshot.anti_affinity_keys),),
                              (Member(pod.name, 0, 0),), 1)
        outcome = choose_victims(request, snapshot, units, pod.priority, self.solver_config,
                                 frozenset(self.config.accelerators))
        if isinstance(outcome, NoPreemption):
            self.metrics.preemptions.labels(outcome.code.value).inc()
            return None
        evicted, _ = self._evict_victims(outcome.chosen, now)
        if not evicted:
            return None
        node = outcome.placement.assignments[0].node
        self.evictor.nominate([(pod.key, node)])
        self.single_flights[pod.key] = (evicted, now + PREEMPT_TIMEOUT_S)
        victims = [p for c in outcome.chosen.victims for p in c.pods
                   if (p.key, p.uid) in evicted]
        self.reporter.preempted(victims, f"Preempted by pod {pod.key} (priority "
                                         f"{pod.priority}) to make room for it on {node}")
        return (f"preempting {describe(outcome.chosen)} on {node}, chosen in "
                f"{outcome.solve_s:.3f}s ({outcome.status})")

    # -- volumes ----------------------------------------------------------------------
    def _volumes(self, snapshot: TopologySnapshot) -> VolumeView:
        if self._view is None:
            pods, _ = self.cluster.all_pods()
            self._view = view_from({r: self.cluster.objects_of(r) for r in VOLUME_OBJECTS},
                                   pods, snapshot.nodes)
        return self._view

    def _wait_for_volumes(self, gang: Gang, record: GangRecord, placement: Placement,
                          chosen: list[tuple[PodRecord, str]], view: VolumeView) -> bool:
        """Settles the claims waiting for their first consumer; True when the gang must
        wait for them before its pods are bound (their room stays reserved)."""
        pods = [pod for pod, _ in chosen]
        if view.claims_bound(pods):
            return False
        actions = view.actions(chosen)
        errors = self.volume_writer.apply(actions) if self.volume_writer is not None else [
            "this scheduler has no volume writer"]
        if errors:
            for pod in pods:
                self.cluster.forget(pod.key)
            message = f"binding volumes failed: {'; '.join(errors)[:600]}"
            record.move(GangPhase.UNSCHEDULABLE, self.clock.time())
            self.reporter.report(gang, record, not_placed(
                gang, EventReason.FAILED_SCHEDULING, "VolumeBindingFailed", message,
                "volumes-failed"))
            return True
        record.volume_wait = VolumeWait(tuple(chosen), placement,
                                        self.clock.monotonic() + BIND_TIMEOUT_S)
        record.move(GangPhase.VOLUMES, self.clock.time())
        log.info("gang=%s decision=waiting-for-volumes claims=%d writes=%d", gang.key,
                 sum(len(p.volumes.claims) for p in pods), len(actions))
        return True

    def _finish_volume_waits(self) -> None:
        """Gangs placed and waiting for their claims: bound once every claim is Bound;
        given up (forgotten, solved again) at the deadline; their room kept meanwhile."""
        waiting = [r for r in self.records.values() if r.volume_wait is not None]
        if not waiting:
            return
        snapshot = self.cluster.snapshot()
        for record in waiting:
            wait = record.volume_wait
            assert wait is not None
            pods = [pod for pod, _ in wait.placements]
            gang = self._waiting_gang(record, pods)
            if self._volumes(snapshot).claims_bound(pods):
                record.volume_wait = None
                record.move(GangPhase.BINDING, self.clock.time())
                results, bind_s = self.binder.bind_all([(p.key, n) for p, n in wait.placements])
                self._settle(gang, record, wait.placement, results, bind_s)
            elif self.clock.monotonic() > wait.deadline:
                record.volume_wait = None
                for pod in pods:
                    self.cluster.forget(pod.key)
                record.move(GangPhase.UNSCHEDULABLE, self.clock.time())
                self.reporter.report(gang, record, not_placed(
                    gang, EventReason.FAILED_SCHEDULING, "VolumeBindingTimeout",
                    f"claims not bound within {BIND_TIMEOUT_S:.0f}s of choosing their nodes; "
                    f"placing the gang again", "volumes-timeout"))
            else:
                for pod, node in wait.placements:  # keep the room reserved
                    self.cluster.assume(pod, node)

    def _waiting_gang(self, record: GangRecord, pods: list[PodRecord]) -> Gang:
        assert record.ref is not None
        spec = GangSpec(record.ref, record.min_member, record.size, record.constraints)
        return Gang(record.key, spec, tuple(pods), (), record.bound_pods)

    def _settle(self, gang: Gang, record: GangRecord, placement: Placement,
                results: list[BindResult], bind_s: float) -> None:
        record.bind_s = bind_s
        self.metrics.bind_seconds.observe(bind_s)
        # Every pod's room at once: kept for good where the API server has the pod, given
        # back for binds not sent (this instance stopped leading) or refused.
        self.cluster.settle_binds(results)
        unsent = [r for r in results if r.unsent]
        if unsent:
            results = [r for r in results if not r.unsent]
            log.info("gang=%s decision=handover unsent=%d message=%r", gang.key, len(unsent),
                     "lost leadership while binding; the rest is the new leader's")
            if not results:
                record.move(GangPhase.WAITING, self.clock.time())
                return
        failed = [r for r in results if not r.ok]
        self.metrics.pods_bound.labels("gang").inc(len(results) - len(failed))
        by_key = {p.key: p for p in gang.pending}
        # Refused again where it was refused before (the placement had no other choice):
        # the retry learnt nothing. Decided before this round's refusals are remembered.
        refused_again = all(r.node in record.failed_nodes.get(by_key[r.pod].name, ())
                            for r in failed if r.node_specific and r.pod in by_key)
        for r in failed:
            self.metrics.bind_errors.labels(str(r.status)).inc()
            if r.node_specific:
                name = by_key[r.pod].name
                record.failed_nodes = {**record.failed_nodes, name: record.failed_nodes.get(
                    name, frozenset()) | {r.node}}
        record.bound_pods = gang.bound + len(results) - len(failed)
        record.move(GangPhase.REPAIRING if failed else GangPhase.BOUND, self.clock.time())
        if failed:
            first, longest = BIND_BACKOFF_S
            # Trying nodes not refused before is learning (one more node per member and
            # second, as kube-scheduler's first backoff); the same refusals again wait
            # twice as long each time.
            again = (refused_again and record.bind_backoff_s > 0
                     and len(failed) == len(results))
            record.bind_backoff_s = min(longest, 2 * record.bind_backoff_s) if again else first
            record.binds_retry_at = self.clock.monotonic() + record.bind_backoff_s
            self._hold_refused(gang, record, [(by_key[r.pod], r.node) for r in failed
                                              if r.pod in by_key and r.node])
        else:
            record.failed_nodes = {}
            record.bind_backoff_s = 0.0
        self.reporter.report(gang, record, placed(gang, placement, results, bind_s,
                                                  record.held))

    def _unschedulable(self, gang: Gang, record: GangRecord, result: Unschedulable,
                       nodes: int) -> None:
        assert record.attempt is not None
        record.attempt = replace(record.attempt, code=result.diagnosis.code)
        note = record.preemption_note
        record.explanation = None
        record.remedies = remedies(result.diagnosis) + ((note,) if note else ())
        record.move(GangPhase.UNSCHEDULABLE, self.clock.time())
        message = f"0/{nodes} nodes are available for gang {gang.key}: {result.reason}"
        if note:
            message += f"; preemption: {note}"
        self.reporter.report(gang, record, not_placed(
            gang, EventReason.FAILED_SCHEDULING, result.diagnosis.code.value, message,
            "unschedulable"))

    def _invalid(self, gang: Gang, record: GangRecord, error: str) -> None:
        record.error = error
        record.move(GangPhase.INVALID, self.clock.time())
        self.reporter.report(gang, record, not_placed(
            gang, EventReason.INVALID_GANG, EventReason.INVALID_GANG.value, error, "invalid"))

    def _check_timeout(self, gang: Gang, record: GangRecord) -> None:
        """scheduleTimeoutSeconds: a gang not placed in time gets an Event and starts a
        new wait (it stays queued: the next capacity change may still place it)."""
        if gang.spec.timeout_s is None:
            return
        now = self.clock.monotonic()
        if record.waiting_since == 0.0:
            record.waiting_since = now
        elif now - record.waiting_since > gang.spec.timeout_s:
            record.waiting_since = now
            self.reporter.report(gang, record, timed_out(gang, record.phase.value))

    def _explain(self, request: GangRequest, snapshot: TopologySnapshot,
                 placement: Placement) -> PlacementExplanation | None:
        try:
            return explain_placement(request, snapshot, placement)
        except Exception:  # an explanation must never cost a placement
            log.exception("gang=%s: explaining the placement failed", request.name)
            return None

    def _prune(self, waiting: set[GangKey], live_pods: set[str]) -> None:
        """Forgets gangs that went away: an unplaced one as soon as it has no members
        left to place; a placed one (checked every PRUNE_EVERY_S) RETAIN_S after none
        of its pods exists any more (finished or deleted), so explain can still say
        where a job that just finished ran."""
        for key, record in list(self.records.items()):
            if key not in waiting and not record.phase.placed:
                del self.records[key]
                self.reporter.deferred.pop(key, None)
        now = self.clock.monotonic()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for key, record in list(self.records.items()):
            if key in waiting or not isinstance(record.result, Placement):
                continue
            if any(f"{key.namespace}/{a.pod}" in live_pods for a in record.result.assignments):
                record.gone_since = None
            elif record.gone_since is None:
                record.gone_since = now
                self.cluster.hold(str(key), (), 0.0)  # gone: nothing will use its room
            elif now - record.gone_since > RETAIN_S:
                del self.records[key]


def _with_running(previous: object, replacement: Placement) -> Placement:
    """The gang's whole placement after a replacement: the earlier assignments of the
    members still running, plus the replacements (so explain keeps showing every pod)."""
    if not isinstance(previous, Placement):
        return replacement
    replaced = {a.pod for a in replacement.assignments}
    kept = [a for a in previous.assignments if a.pod not in replaced]
    merged = sorted([*kept, *replacement.assignments], key=lambda a: (a.rank, a.pod))
    return replace(replacement, assignments=tuple(merged))
