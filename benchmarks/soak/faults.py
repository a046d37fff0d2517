"""The faults, one class per kind, each real and bounded: `inject` starts it, `heal` ends
it after its drawn duration, and nothing outlives `heal` (the runner heals whatever is
still active when the run ends, in reverse order).

`blocking` marks the faults during which no scheduler can bind at all (no leader yet,
no API server, every bind refused or throttled): the invariants' clock for "a gang that
fits is bound within T s" stands still while one is active and for a grace period after
it heals (invariants.GRACE_S).

Kinds:
  leader-kill       kill -9 of the leading replica; healed by starting a new process
  leader-freeze     SIGSTOP of the leader for longer than its lease, then SIGCONT
  apiserver-restart kube-apiserver killed and restarted (localcluster.restart_component)
  etcd-restart      etcd killed and restarted
  nodes-deleted     a few nodes deleted, recreated at heal (KWOK makes them Ready again)
  nodes-notready    KWOK stops heartbeating a few nodes (the label it selects them by
                    removed) until the node-lifecycle controller marks them NotReady
  nodes-cordoned    a few nodes cordoned and their pods evicted; uncordoned at heal
  throttle-storm    an APF FlowSchema + PriorityLevel with no seats for the scheduler's
                    ServiceAccount: every request it makes is answered 429
  binds-refused     a ValidatingAdmissionPolicy refusing the scheduler's binds to a
                    third of the nodes (partial binds, then repair)
  partition         the leader's TCP proxy paused past its lease
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.soak.replicas import ACCOUNT, LEASE_NS, USER, Replica
from kube import ApiError, KubeClient, api_path
from kube.resources import NODES, PODS
from localcluster.cluster import LocalCluster

VAP = api_path("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies")
VAP_BINDINGS = api_path("admissionregistration.k8s.io", "v1",
                        "validatingadmissionpolicybindings")
FLOW_SCHEMAS = api_path("flowcontrol.apiserver.k8s.io", "v1", "flowschemas")
PRIORITY_LEVELS = api_path("flowcontrol.apiserver.k8s.io", "v1",
                           "prioritylevelconfigurations")
STORM = "soak-storm"
REFUSE = "soak-refuse-binds"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
KWOK_LABEL = "type"
"""The node label KWOK selects the nodes it plays by (runner: kwok-controller flags)."""


@dataclass
class Context:
    """What faults act on; `log` records a line in the soak's own log."""

    cluster: LocalCluster
    kube: KubeClient
    replicas: list[Replica]
    rng: random.Random
    log: Callable[[str], None]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every node the soak made, by name, as created (what a deleted one is rebuilt from)."""
    busy_nodes: set[str] = field(default_factory=set)
    """Nodes some active fault holds: another node fault picks others."""

    def leader(self) -> Replica | None:
        leaders = [r for r in self.replicas if r.leader()]
        return leaders[0] if len(leaders) == 1 else None

    def pick_nodes(self, count: int, bound_only: bool = True) -> list[str]:
        """`count` nodes no other fault holds, preferring nodes with our pods on them."""
        free = sorted(set(self.nodes) - self.busy_nodes)
        if bound_only:
            pods = self.kube.get(PODS.path("soak"))["items"]
            used = sorted({p["spec"].get("nodeName") for p in pods
                           if p["spec"].get("nodeName") in free})
            chosen = self.rng.sample(used, min(count, len(used)))
        else:
            chosen = []
        rest = [n for n in free if n not in chosen]
        chosen += self.rng.sample(rest, min(count - len(chosen), len(rest)))
        self.busy_nodes.update(chosen)
        return chosen


class Fault:
    kind = ""
    blocking = False
    duration_range = (10.0, 30.0)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.duration = ctx.rng.uniform(*self.duration_range)
        self.detail = ""

    def inject(self) -> bool:
        """Starts the fault; False when it cannot be injected now (e.g. no leader)."""
        raise NotImplementedError

    def heal(self) -> None:
        raise NotImplementedError


class LeaderKill(Fault):
    kind = "leader-kill"
    blocking = True
    duration_range = (3.0, 10.0)

    def inject(self) -> bool:
        leader = self.ctx.leader()
        if leader is None:
            return False
        self.replica = leader
        leader.kill()
        self.detail = f"replica {leader.index} pid {leader.history[-1].process.pid}"
        return True

    def heal(self) -> None:
        if not self.replica.alive():
            self.replica.start()


class LeaderFreeze(Fault):
    kind = "leader-freeze"
    blocking = True
    duration_range = (14.0, 25.0)  # past the 10 s lease: the standby takes over

    def inject(self) -> bool:
        leader = self.ctx.leader()
        if leader is None:
            return False
        self.replica = leader
        leader.freeze()
        self.detail = f"replica {leader.index}"
        return True

    def heal(self) -> None:
        self.replica.thaw()


class ComponentRestart(Fault):
    blocking = True
    binary = ""
    duration_range = (1.0, 5.0)

    def inject(self) -> bool:
        # restart_component returns once the component runs again (the apiserver: serves);
        # the downtime is the drawn duration, so heal has nothing left to do but wait.
        began = time.monotonic()
        self.ctx.cluster.restart_component(self.binary, downtime_s=self.duration,
                                           timeout=180)
        deadline = time.monotonic() + 180
        while not self.ctx.cluster.healthy() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.detail = (f"down {self.duration:.1f}s, serving again after "
                       f"{time.monotonic() - began:.1f}s")
        self.duration = 0.0
        return True

    def heal(self) -> None:
        pass


class ApiserverRestart(ComponentRestart):
    kind = "apiserver-restart"
    binary = "kube-apiserver"


class EtcdRestart(ComponentRestart):
    kind = "etcd-restart"
    binary = "etcd"


class NodesDeleted(Fault):
    kind = "nodes-deleted"
    duration_range = (30.0, 90.0)

    def inject(self) -> bool:
        self.names = self.ctx.pick_nodes(self.ctx.rng.randint(1, 4))
        for name in self.names:
            with contextlib.suppress(ApiError):
                self.ctx.kube.delete(NODES.path(name=name))
        self.detail = ",".join(self.names)
        return bool(self.names)

    def heal(self) -> None:
        """The nodes come back as a kubelet registers one: with its capacity and
        allocatable in the created object (its conditions follow from KWOK). Created
        without a status, KWOK gave them its default allocatable, with no GPUs, and the
        old pods pod GC had not yet removed counted as over-committed (60-minute soak,
        187 s)."""
        for name in self.names:
            original = self.ctx.nodes[name]
            node = {k: v for k, v in original.items() if k != "status"}
            node["metadata"] = {k: v for k, v in node["metadata"].items()
                                if k in ("name", "labels", "annotations")}
            node["status"] = {k: v for k, v in (original.get("status") or {}).items()
                              if k in ("capacity", "allocatable")}
            for _ in range(60):  # the old object may still be finalising
                try:
                    self.ctx.kube.create(NODES.path(), node)
                    break
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    time.sleep(1)
        self.ctx.busy_nodes.difference_update(self.names)


class NodesNotReady(Fault):
    kind = "nodes-notready"
    # KWOK stops renewing their Leases; the node monitor marks them NotReady 100 s after
    # the last renewal (runner: node-monitor-grace-period), renewals come every ~50 s.
    # So every one is NotReady within ~155 s: held at least 170 s (130-170 s left some
    # Ready at heal in the 60-minute soak), healed before the 300 s NoExecute toleration
    # from the taint runs out: no eviction.
    duration_range = (170.0, 230.0)

    def _label(self, name: str, value: str | None) -> None:
        with contextlib.suppress(ApiError):
            self.ctx.kube.call("PATCH", NODES.path(name=name), content_type=MERGE,
                               body={"metadata": {"labels": {KWOK_LABEL: value}}})

    def inject(self) -> bool:
        self.names = self.ctx.pick_nodes(self.ctx.rng.randint(2, 6))
        for name in self.names:
            self._label(name, None)
        self.detail = ",".join(self.names)
        return bool(self.names)

    def heal(self) -> None:
        went = 0
        for name in self.names:
            with contextlib.suppress(ApiError):
                node = self.ctx.kube.get(NODES.path(name=name))
                went += not any(c.get("type") == "Ready" and c.get("status") == "True"
                                for c in (node.get("status") or {}).get("conditions") or ())
            self._label(name, "kwok")
        self.ctx.log(f"nodes-notready: {went} of {len(self.names)} were NotReady at heal")
        self.ctx.busy_nodes.difference_update(self.names)


class NodesCordoned(Fault):
    kind = "nodes-cordoned"
    duration_range = (20.0, 60.0)

    def _cordon(self, name: str, value: bool) -> None:
        with contextlib.suppress(ApiError):
            self.ctx.kube.call("PATCH", NODES.path(name=name), content_type=STRATEGIC,
                               body={"spec": {"unschedulable": value}})

    def inject(self) -> bool:
        self.names = self.ctx.pick_nodes(self.ctx.rng.randint(1, 4))
        evicted = 0
        for name in self.names:
            self._cordon(name, True)
            pods = self.ctx.kube.get(PODS.path(), fieldSelector=f"spec.nodeName={name}")
            for pod in pods["items"]:
                meta = pod["metadata"]
                if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or ()):
                    continue  # as kubectl drain: DaemonSet pods stay
                with contextlib.suppress(ApiError):
                    self.ctx.kube.create(PODS.path(meta["namespace"], meta["name"], "eviction"),
                                         {"apiVersion": "policy/v1", "kind": "Eviction",
                                          "metadata": {"name": meta["name"],
                                                       "namespace": meta["namespace"]},
                                          "deleteOptions": {"gracePeriodSeconds": 0}})
                    evicted += 1
        self.detail = f"{','.join(self.names)} ({evicted} pods evicted)"
        return bool(self.names)

    def heal(self) -> None:
        for name in self.names:
            self._cordon(name, False)
        self.ctx.busy_nodes.difference_update(self.names)


class ThrottleStorm(Fault):
    kind = "throttle-storm"
    blocking = True
    duration_range = (10.0, 25.0)

    def inject(self) -> bool:
        self.ctx.kube.create(PRIORITY_LEVELS, {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration", "metadata": {"name": STORM},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 0, "lendablePercent": 0,
                "borrowingLimitPercent": 0, "limitResponse": {"type": "Reject"}}}})
        self.ctx.kube.create(FLOW_SCHEMAS, {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": STORM},
            "spec": {"priorityLevelConfiguration": {"name": STORM}, "matchingPrecedence": 100,
                     "distinguisherMethod": {"type": "ByUser"},
                     "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                         "name": ACCOUNT, "namespace": LEASE_NS}}],
                         "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                            "resources": ["*"], "namespaces": ["*"],
                                            "clusterScope": True}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})
        return True

    def heal(self) -> None:
        for path in (f"{FLOW_SCHEMAS}/{STORM}", f"{PRIORITY_LEVELS}/{STORM}"):
            with contextlib.suppress(ApiError):
                self.ctx.kube.delete(path)


class BindsRefused(Fault):
    kind = "binds-refused"
    blocking = True
    duration_range = (15.0, 40.0)

    def inject(self) -> bool:
        # A third of the nodes, by the last digit of their name (p5-000123: 3, 6, 9 when
        # the drawn residue is 0): some members of a gang land, others are refused: the
        # partial-bind-then-repair path. (A first version keyed on the name's length,
        # which every node shares: all binds or none were refused.)
        salt = self.ctx.rng.randrange(3)
        name = "object.target.name"
        expression = (f"request.userInfo.username != '{USER}' || "
                      f"int({name}.substring(size({name}) - 1)) % 3 != {salt}")
        self.ctx.kube.create(VAP, {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy", "metadata": {"name": REFUSE},
            "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods/binding"]}]},
                "validations": [{"expression": expression,
                                 "message": "soak: bind refused by policy"}]}})
        self.ctx.kube.create(VAP_BINDINGS, {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": REFUSE},
            "spec": {"policyName": REFUSE, "validationActions": ["Deny"]}})
        self.detail = f"nodes whose last digit % 3 == {salt}"
        return True

    def heal(self) -> None:
        for path in (f"{VAP_BINDINGS}/{REFUSE}", f"{VAP}/{REFUSE}"):
            with contextlib.suppress(ApiError):
                self.ctx.kube.delete(path)


class Partition(Fault):
    kind = "partition"
    blocking = True
    duration_range = (14.0, 30.0)

    def inject(self) -> bool:
        leader = self.ctx.leader()
        if leader is None:
            return False
        self.replica = leader
        leader.proxy.pause()
        self.detail = f"replica {leader.index}"
        return True

    def heal(self) -> None:
        self.replica.proxy.resume()


KINDS: tuple[type[Fault], ...] = (LeaderKill, LeaderFreeze, ApiserverRestart, EtcdRestart,
                                  NodesDeleted, NodesNotReady, NodesCordoned, ThrottleStorm,
                                  BindsRefused, Partition)


def cleanup_policies(kube: KubeClient) -> None:
    """Removes any APF or admission object a fault left (a run stopped mid-fault)."""
    for path in (f"{FLOW_SCHEMAS}/{STORM}", f"{PRIORITY_LEVELS}/{STORM}",
                 f"{VAP_BINDINGS}/{REFUSE}", f"{VAP}/{REFUSE}"):
        with contextlib.suppress(ApiError):
            kube.delete(path)
