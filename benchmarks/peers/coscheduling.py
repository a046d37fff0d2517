"""scheduler-plugins' Coscheduling as a peer (`coscheduling`).

The binary is scheduler-plugins' own kube-scheduler build (`cmd/scheduler` of
sigs.k8s.io/scheduler-plugins v0.34.1-devel, on the Kubernetes 1.34.1 libraries its
go.mod replaces), built by hack/build-coscheduling.sh through the wrapper module
hack/coscheduling; the PodGroup CRD (`scheduling.x-k8s.io/v1alpha1`) is the one that
module ships (manifests/coscheduling/crd.yaml), copied next to the binary.

It runs as a second scheduler with its own profile, configured as the plugin's README and
manifests/coscheduling/scheduler-config.yaml say: Coscheduling enabled at every extension
point (multiPoint) and as the only queue sort; the other plugins are kube-scheduler
1.34's defaults, so, unlike kube-scheduler-tas, it knows no topology and spreads or packs
as NodeResourcesFit's default LeastAllocated does. Permit waits the plugin's default 60 s
for a group's minMember. Each gang is a PodGroup with `minMember` = its size, its pods
labelled `scheduling.x-k8s.io/pod-group: <name>`. scheduler-plugins' PodGroup controller
(cmd/controller) is not run: it only writes the groups' status, which the plugin's
PreFilter and Permit do not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.peers import ApiObject, GangSpec, PeerUnavailable, run_command
from benchmarks.peers.scheduler_process import SchedulerProcess, scheduler_config
from kube.resources import POD_GROUPS
from localcluster.binaries import REPO
from localcluster.controllers import ControllerError, install_crds

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster
    from topology.snapshot import TopologySnapshot

BUILD_SCRIPT = REPO / "hack" / "build-coscheduling.sh"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
PROFILE_PLUGINS = {
    "multiPoint": {"enabled": [{"name": "Coscheduling"}]},
    "queueSort": {"enabled": [{"name": "Coscheduling"}], "disabled": [{"name": "*"}]},
}
"""From scheduler-plugins' manifests/coscheduling/scheduler-config.yaml."""


class Coscheduling:
    """scheduler-plugins v0.34.1-devel's scheduler with the Coscheduling plugin."""

    name = "coscheduling"
    scheduler_name = "coscheduling"
    workloads = frozenset({"statefulset"})

    def __init__(self) -> None:
        self._built: Path | None = None
        self._process = SchedulerProcess(self.name)

    def prepare(self) -> None:
        """Builds it once (cached under ~/.cache/phalanx/coscheduling; ~10 min cold on 2
        cores) or finds the build."""
        self._built = Path(run_command(self.name, ["bash", str(BUILD_SCRIPT)]))

    def start(self, cluster: LocalCluster) -> None:
        assert self._built is not None, "prepare() first"
        try:
            install_crds(cluster.kube(), self._built)
        except ControllerError as exc:
            raise PeerUnavailable(self.name, f"install {self._built / 'crd.yaml'}",
                                  str(exc)) from exc
        profile = {"schedulerName": self.scheduler_name, "plugins": PROFILE_PLUGINS}
        self._process.start(cluster, self._built / "scheduler",
                            scheduler_config(cluster.kubeconfig, profile))

    def gang(self, name: str, size: int, snapshot: TopologySnapshot) -> GangSpec:
        group = {"apiVersion": POD_GROUPS.api_version, "kind": "PodGroup",
                 "metadata": {"name": name}, "spec": {"minMember": size}}
        return GangSpec(objects=(ApiObject(POD_GROUPS, group),),
                        pod_labels={POD_GROUP_LABEL: name})

    def pids(self, cluster: LocalCluster) -> list[int]:
        return [self._process.pid]

    def stop(self) -> None:
        self._process.stop()
