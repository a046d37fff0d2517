"""Peers: the other schedulers benchmarks/kwok_placement.py runs on the same cluster,
nodes, load and gangs as Phalanx.

One module per peer, each with one class implementing `Peer`, registered in `PEERS` by
its `--schedulers` name (module and class as text, imported when asked for: a peer's
module may need what only its own build brings, and one peer's import error must not
stop the others). The run loop knows only this protocol; nothing peer-specific lives in
kwok_placement.py. Its calls, in order:

    peer = load(name)                       # nothing started yet
    peer.prepare()                          # build what it needs (before the cluster starts,
                                            #   so a 10-minute Go build does not share the
                                            #   2 cores with a running control plane)
    peer.start(cluster)                     # CRDs, config, processes; ready to schedule
    for each gang, in arrival order:
        spec = peer.gang(name, size, snap)  # `snap`: the API server's state just before
        create spec.objects, then the workload with spec applied to its pod templates
        ... wait until bound, measure ...
        delete spec.objects                 # after the gang's pods are gone
    peer.pids(cluster)                      # whose CPU and peak RSS count as the peer's
    peer.stop()

A peer that cannot be built or started raises `PeerUnavailable` with the exact command
and its error; the run loop records that in the results (never drops it silently).
"""

from __future__ import annotations

import importlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kube.resources import Resource

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster
    from topology.snapshot import TopologySnapshot

__all__ = ["PEERS", "ApiObject", "GangSpec", "Peer", "PeerUnavailable", "apply_gang",
           "cluster_scheduler_pid", "load", "pod_templates", "run_command"]

PEERS: dict[str, str] = {
    "kube-scheduler": "benchmarks.peers.kube_scheduler:KubeScheduler",
    "kube-scheduler-gang": "benchmarks.peers.kube_scheduler:KubeSchedulerGang",
    "kube-scheduler-tas": "benchmarks.peers.kube_scheduler_tas:KubeSchedulerTas",
    "kueue-tas": "benchmarks.peers.kueue_tas:KueueTas",
    "kueue-tas-required": "benchmarks.peers.kueue_tas:KueueTasRequired",
    "coscheduling": "benchmarks.peers.coscheduling:Coscheduling",
}
"""--schedulers name -> "module:class" of its `Peer`."""


class PeerUnavailable(RuntimeError):
    """A peer could not be built or started. Carries the exact command that failed and
    what it printed, so the results (and the issue) can say so word for word."""

    def __init__(self, peer: str, command: str, error: str) -> None:
        super().__init__(f"{peer}: `{command}` failed: {error}")
        self.peer, self.command, self.error = peer, command, error


@dataclass(frozen=True)
class ApiObject:
    """An object a peer needs created for one gang (a PodGroup, a Workload, ...)."""

    resource: Resource
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True)
class GangSpec:
    """What one gang looks like to a peer: objects to create before its workload, and
    what its pods (and the workload object itself) must carry for the peer to treat
    them as one gang."""

    objects: tuple[ApiObject, ...] = ()
    """Created in order, in the gang's namespace, before the workload; deleted after."""
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    pod_spec: Mapping[str, Any] = field(default_factory=dict)
    """Top-level fields set on the pods' spec (e.g. `schedulingGroup`)."""
    workload_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels on the workload object itself (e.g. Kueue's queue name)."""
    note: str | None = None
    """What the report must say about this gang on this peer, e.g. which topology level
    a single required constraint names and why."""


@runtime_checkable
class Peer(Protocol):
    """A scheduler measured beside Phalanx (see the module docstring for the call order)."""

    name: str
    """Its --schedulers name."""
    scheduler_name: str
    """The pods' spec.schedulerName."""
    workloads: frozenset[str]
    """Which kwok_placement workloads it can run ("statefulset", "jobset")."""

    def prepare(self) -> None:
        """Builds or finds its binaries; raises PeerUnavailable."""

    def start(self, cluster: LocalCluster) -> None:
        """Installs what it needs on the cluster and starts its processes, returning once
        it schedules; raises PeerUnavailable."""

    def gang(self, name: str, size: int, snapshot: TopologySnapshot) -> GangSpec:
        """The gang `name` of `size` 8-GPU pods, arriving on the cluster `snapshot` shows."""

    def pids(self, cluster: LocalCluster) -> list[int]:
        """The processes doing its scheduling (CPU and peak RSS are summed over them)."""

    def stop(self) -> None:
        """Stops what start() started (idempotent)."""


def load(name: str) -> Peer:
    """The registered peer `name`, imported now."""
    module_name, _, class_name = PEERS[name].partition(":")
    peer = getattr(importlib.import_module(module_name), class_name)()
    if not isinstance(peer, Peer):
        raise TypeError(f"{PEERS[name]} does not implement benchmarks.peers.Peer")
    return peer


def pod_templates(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates of a StatefulSet, Job or JobSet."""
    spec = workload["spec"]
    if "replicatedJobs" in spec:
        return [job["template"]["spec"]["template"] for job in spec["replicatedJobs"]]
    return [spec["template"]]


def apply_gang(workload: dict[str, Any], gang: GangSpec) -> dict[str, Any]:
    """`workload` with the gang's labels, annotations and pod spec fields set (in place;
    returned for chaining)."""
    if gang.workload_labels:
        workload["metadata"].setdefault("labels", {}).update(gang.workload_labels)
    for template in pod_templates(workload):
        metadata = template.setdefault("metadata", {})
        if gang.pod_labels:
            metadata.setdefault("labels", {}).update(gang.pod_labels)
        if gang.pod_annotations:
            metadata.setdefault("annotations", {}).update(gang.pod_annotations)
        template["spec"].update(gang.pod_spec)
    return workload


def run_command(peer: str, argv: Sequence[str], timeout: float = 1800) -> str:
    """Runs a build or install command; its stdout's last line, or PeerUnavailable with
    the command and the tail of its stderr."""
    command = " ".join(argv)
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(peer, command, str(exc)) from exc
    if done.returncode != 0:
        raise PeerUnavailable(peer, command, f"exit {done.returncode}: "
                              f"{(done.stderr or done.stdout)[-2000:].strip()}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise PeerUnavailable(peer, command, "printed nothing on stdout")
    return lines[-1]


def cluster_scheduler_pid(cluster: LocalCluster) -> int:
    """The cluster's own kube-scheduler (kwokctl records its pid; a peer's second
    kube-scheduler also names the cluster's folder, so a search by name could find it)."""
    pid = int((cluster.cluster_dir / "pids" / "kube-scheduler.pid").read_text().strip())
    if pid not in cluster.processes():
        raise RuntimeError(f"cluster {cluster.name}: kube-scheduler (pid {pid}) not running")
    return pid
