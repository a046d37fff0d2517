"""The soak's main loop: set up, then once a second start and finish work, start and
heal faults, and judge the API server's view; at the end heal everything, judge a full
list once more, and report.

    .venv/bin/python -m benchmarks.soak --minutes M --seed S [--nodes N]

The last line of stdout is the result as one JSON object (soak.report); the
timeline plot is written to benchmarks/plots/soak-<seed>-<minutes>m.png (--plot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.soak import audit, invariants
from benchmarks.soak.chaos import Faults, fault_plan
from benchmarks.soak.faults import KWOK_LABEL, Context, cleanup_policies
from benchmarks.soak.invariants import GangState
from benchmarks.soak.judge import Judge, final_checks
from benchmarks.soak.observer import View
from benchmarks.soak.replicas import LEASE_NS, Replica, account_token, make_replicas
from benchmarks.soak.report import build_report
from benchmarks.soak.state import Run, Tracked
from benchmarks.soak.work import Work, finish_due
from benchmarks.soak.workload import NS, PRIORITIES, Stream
from kube import ApiError, KubeClient, api_path
from kube.resources import CRDS, NODES, POD_GROUPS
from localcluster.binaries import REPO
from localcluster.bulk import create_all, ensure_namespace, wait_until
from localcluster.cluster import LocalCluster
from localcluster.synthnodes import schedulable
from topology.synthetic import ClusterSpec, synth_nodes

TICK_S = 1.0
CENSUS_S = 300.0
"""Every so often each replica logs a census of its live objects (grep `census` in the
workdir's replica logs)."""


def _setup(cluster: LocalCluster, args: argparse.Namespace, run: Run
           ) -> tuple[KubeClient, dict[str, dict[str, Any]], str]:
    cluster.up(timeout=300)
    kube = cluster.kube()
    nodes = synth_nodes(ClusterSpec(nodes=args.nodes, seed=args.seed))
    create_all(kube, nodes)
    wait_until(lambda: sum(1 for n in kube.list_all(NODES.path())[0] if schedulable(n))
               >= args.nodes, 300, f"{args.nodes} nodes Ready", interval=2)
    for name in (NS, LEASE_NS):
        ensure_namespace(kube, name)
    token = account_token(kube, LEASE_NS, "soak-phalanx", int(args.minutes * 60 + 3600))
    for name, value in PRIORITIES.items():
        kube.create(api_path("scheduling.k8s.io", "v1", "priorityclasses"), {
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value})
    crd = yaml.safe_load((REPO / "manifests" / "crd" / "podgroup.yaml").read_text())
    with contextlib.suppress(ApiError):
        kube.create(CRDS.path(), crd)
    wait_until(lambda: _served(kube), 60, "PodGroup CRD served")
    run.log(f"cluster {cluster.name}: {args.nodes} nodes Ready, controllers "
            f"{cluster.running_controllers}")
    return kube, {n["metadata"]["name"]: n for n in nodes}, token


def _served(kube: KubeClient) -> bool:
    try:
        kube.get(POD_GROUPS.path(NS))
        return True
    except ApiError:
        return False


def soak(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    _stop_on_signal(run)
    rng = random.Random(args.seed)
    stream = Stream(args.seed, args.nodes, args.minutes * 60.0)
    run_s = args.minutes * 60.0
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster.for_this_process(
        "soak", controllers=("jobset", "lws", "training-operator"),
        audit_policy=audit.policy(),
        extra_args={
            # APF on (kwokctl turns it off): the 429 storm is an APF priority level.
            "kube-apiserver": {"enable-priority-and-fairness": "true"},
            # KWOK heartbeats only nodes labelled type=kwok: the NotReady fault takes the
            # label away (with an annotation selector KWOK keeps renewing the Lease).
            "kwok-controller": {"manage-all-nodes": "false",
                                "manage-nodes-with-label-selector": f"{KWOK_LABEL}=kwok"},
            # kwokctl scales the node monitor's grace to 200 s with its heartbeat factor;
            # KWOK renews each Lease every ~50 s, so 100 s marks a silent node NotReady
            # within two missed renewals and never a live one.
            "kube-controller-manager": {"node-monitor-grace-period": "100s",
                                        "node-monitor-period": "5s"}})
    replicas: list[Replica] = []
    view: View | None = None
    faults: Faults | None = None
    work: Work | None = None
    try:
        kube, node_objects, token = _setup(cluster, args, run)
        replicas = make_replicas(cluster.kubeconfig, token, workdir,
                                 trace_frames=args.tracemalloc)
        for replica in replicas:
            replica.start()
        wait_until(lambda: sum(r.leader() for r in replicas) == 1, 90, "one leader")
        view = View(cluster.kube()).start()
        domains = sorted({(invariants.LEVELS[1], n["metadata"]["labels"][invariants.LEVELS[1]])
                          for n in node_objects.values()})
        ctx = Context(cluster, kube, replicas, random.Random(args.seed + 1), run.log,
                      node_objects)
        faults = Faults(ctx, run, fault_plan(random.Random(args.seed + 2), run_s))
        work = Work(kube, run)
        judge = Judge(run, kube)
        # Arrivals for ~60 % of the GPUs on average (measured: 90 % kept a shared
        # 2-core machine's API server minutes behind): gangs still queue, as the big ones
        # need most of the cluster at once.
        mean_nodes = 30.0 if args.nodes >= 1000 else 14.0
        gang_every = 200.0 * mean_nodes / (0.6 * args.nodes)
        next_gang, next_single = 1.0, 2.0
        run.start = time.monotonic()
        run.wall0 = time.time()
        run.log(f"soak: {args.minutes} min, seed {args.seed}, {args.nodes} nodes, a gang "
                f"every {gang_every:.1f}s on average, {len(faults.plan)} faults planned")
        last_tick = last_census = run.t()
        end = run_s + invariants.GRACE_S + 5
        while run.t() < end and run.stopped_at is None:
            now = run.t()
            arriving = now < run_s
            while arriving and next_gang <= now:
                gang = stream.gang()
                gang.created_at = now
                run.gangs[gang.name] = Tracked(gang, GangState(gang.name, gang.size,
                                                               gang.priority, now))
                work.create(gang.objects)
                next_gang += rng.expovariate(1.0 / gang_every)
            while arriving and next_single <= now:
                single = stream.single(domains)
                single.created_at = now
                run.singles.append(single)
                work.create(single.objects)
                next_single += rng.expovariate(1.0 / 4.0)
            finish_due(run, work, now, run_s)
            if now < run_s:
                faults.step(now)
            elif faults.active or faults.busy is not None:
                faults.heal_all()
            _watch_replicas(run, replicas)
            if now - last_census >= CENSUS_S:
                last_census = now
                for replica in replicas:
                    replica.census()
            if view.current and view.lag_s() <= judge.LAG_LIMIT_S:
                moment = view.moment()
                counts = judge.tick(moment, faults.blocking)
                run.timeline.append((round(now, 1), *counts))
                run.population.append((round(now, 1), moment.pods))
            else:
                judge.pause(faults.blocking)
            last_tick += TICK_S
            time.sleep(max(0.0, last_tick - run.t()))
        faults.heal_all()
        final_checks(run, kube, judge)
        run.unconfirmed = judge.unconfirmed
        run.unjudged_s = judge.unjudged_s
        run.view_lags = list(view.lags)
        for t, name, what in audit.gang_requests(cluster.audit_log):
            (run.binds if what == audit.BIND else run.writes).append((t - run.wall0, name))
    finally:
        if run.stop_signal:
            run.log(f"{run.stop_signal}: stopped at {run.stopped_at:.0f}s, cleaning up")
        if work is not None:
            work.stop()
        if faults is not None:
            faults.heal_all()
        with contextlib.suppress(Exception):
            cleanup_policies(cluster.kube())
        if view is not None:
            view.stop()
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.stop()
        if not args.keep:
            cluster.down()
    return build_report(run, replicas, cluster, run_s)


def _watch_replicas(run: Run, replicas: list[Replica]) -> None:
    now = time.monotonic()
    for replica in replicas:
        life = replica.current
        if life is None:
            continue
        if life.killed:
            continue  # a leader-kill fault's; its heal starts the next incarnation
        if life.ended is None and life.process.poll() is not None:
            life.ended = now
            run.violation(f"replica {replica.index} exited by itself "
                          f"(code {life.process.returncode}); restarted")
            replica.start()
            continue
        if life.ended is None:
            life.sample_rss(now)
            if life.led_at is None and replica.leader():
                life.led_at = now


def _stop_on_signal(run: Run) -> None:
    """SIGTERM or SIGINT ends the loop at its next second, and the run cleans up as at its
    end: faults healed, replicas (in sessions of their own, so no signal to this group
    reaches them) stopped, the cluster taken down. A flag, not an exception: an
    exception raised wherever the main thread happens to be can be caught on its way
    (the first try left replicas and cluster running), and one raised inside the
    cleanup would cut it short. Nothing is printed from the handler (a signal landing
    inside a print to the same stream raises). A second signal while cleaning up ends
    the process at once, as its default would (what it leaves, the next run's cluster
    start removes: localcluster's stale clusters)."""
    def stop(signum: int, _frame: object) -> None:
        if run.stopped_at is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        run.stopped_at = run.t()
        run.stop_signal = signal.Signals(signum).name  # logged by the loop, not here
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--plot", default="", help="where the timeline PNG goes")
    parser.add_argument("--workdir", default="", help="replica logs and kubeconfigs")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="trace the replicas' allocations (a diagnosis of RSS growth: "
                             "each census names the lines that grew; slows them)")
    args = parser.parse_args(argv)
    if not args.workdir:
        args.workdir = str(Path("/tmp") / f"phalanx-soak-{args.seed}-{int(time.time())}")
    result = soak(args)
    width = max(len(key) for key in result)
    for key, value in result.items():  # the table for people, on stderr
        print(f"{key:<{width}}  {value}", file=sys.stderr)
    print(json.dumps(result), flush=True)  # the last line of stdout, for scripts
    return 0 if result["violations"] == 0 and result["stopped_early_at_s"] is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
