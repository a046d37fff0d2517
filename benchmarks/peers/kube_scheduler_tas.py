"""kube-scheduler v1.36.3 with topology-aware workload scheduling (`kube-scheduler-tas`).

The cluster's own kube-scheduler binary as a second process with its own
KubeSchedulerConfiguration: schedulerName `kube-scheduler-tas`, leader election off, the
GenericWorkload, GangScheduling and TopologyAwareWorkloadScheduling gates (the apiserver
serves `scheduling.k8s.io/v1alpha2` with the same gates: localcluster.cluster). Each gang
is a v1alpha2 PodGroup with `gang.minCount` and `schedulingConstraints.topology: [{key}]`;
its pods name it in `spec.schedulingGroup.podGroupName`.

What that scheduler does with a PodGroup (pkg/scheduler/schedule_one_podgroup.go and
framework/plugins/topologyaware in v1.36.3): TopologyPlacementGenerator turns every value
of the constraint's label into one candidate placement (the nodes carrying it); the pod
group cycle schedules the whole group inside each candidate, keeps those where all
minCount pods fit, and the placement score plugins pick one; NodeResourcesFit scores a
placement MostAllocated over `scoringStrategy.resources`. So the config gives
NodeResourcesFit `scoringStrategy: {type: MostAllocated, resources: [nvidia.com/gpu]}`:
placements and nodes are then ranked by how full their GPUs would be (packing), where the
default resources (cpu, memory) would rank them by resources these pods do not request.

The API takes one constraint (maxItems=1), and it is required: a gang that fits in no
single domain of that level stays pending. Phalanx minimises domains at every level at
once; this peer can only be told one level. We name, per gang, the lowest level (the
tightest) whose largest domain can hold the whole gang at the moment it arrives (free
8-GPU slots counted on the API server's state just before), and the report says which
level and why (GangSpec.note).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.peers import GangSpec
from benchmarks.peers.kube_scheduler import native_pod_group
from benchmarks.peers.scheduler_process import SchedulerProcess, scheduler_config
from localcluster.cluster import FEATURE_GATES

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster
    from topology.snapshot import TopologySnapshot

GPU = "nvidia.com/gpu"
GPUS_PER_POD = 8
"""The benchmark's gang pods each request a whole p5 node's GPUs (kwok_placement)."""
SCORING_STRATEGY = {"type": "MostAllocated", "resources": [{"name": GPU, "weight": 1}]}


def profile(scheduler_name: str) -> dict[str, Any]:
    """The TAS peer's profile: default plugins (the gates add GangScheduling,
    TopologyPlacementGenerator and PodGroupPodsCount), NodeResourcesFit packing by GPUs."""
    return {"schedulerName": scheduler_name, "pluginConfig": [
        {"name": "NodeResourcesFit", "args": {"scoringStrategy": SCORING_STRATEGY}}]}


def pod_slots(snapshot: TopologySnapshot) -> np.ndarray:
    """How many more gang pods (8 GPUs each, one pod slot) each node can take now."""
    gpus = snapshot.resource_column(GPU)
    if gpus is None:
        return np.zeros(len(snapshot.nodes), dtype=np.int64)
    slots = np.maximum(gpus, 0) // GPUS_PER_POD
    pods = snapshot.resource_column("pods")
    if pods is not None:
        slots = np.minimum(slots, np.maximum(pods, 0))
    usable = np.array([n.ready and not n.unschedulable for n in snapshot.nodes], dtype=bool)
    return np.where(usable, slots, 0)


def required_level(snapshot: TopologySnapshot, size: int) -> tuple[str | None, str]:
    """The lowest level whose largest domain can hold `size` gang pods now, and why
    (the largest domain's free slots at it and at the level below). None when no level
    can (then the gang gets no constraint and the note says so)."""
    slots = pod_slots(snapshot)
    tree = snapshot.tree
    below: str | None = None
    for level in range(len(tree.levels) - 1, -1, -1):
        per_domain = np.bincount(tree.domain_of[level], weights=slots,
                                 minlength=tree.domain_count(level))
        largest = int(per_domain.max()) if per_domain.size else 0
        key = tree.levels[level]
        if largest >= size:
            why = (f"required {key}: its largest domain had {largest} free 8-GPU slots for "
                   f"{size} pods")
            return key, why + (f"; {below}" if below else "")
        below = f"the largest {key} domain had only {largest}"
    return None, f"no constraint: no single domain at any level held {size} pods ({below})"


class KubeSchedulerTas:
    """A second kube-scheduler (TopologyAwareWorkloadScheduling) with its own profile."""

    name = "kube-scheduler-tas"
    scheduler_name = "kube-scheduler-tas"
    workloads = frozenset({"statefulset"})

    def __init__(self) -> None:
        self._process = SchedulerProcess(self.name)

    def prepare(self) -> None:
        """The cluster's own kube-scheduler binary: nothing to build."""

    def start(self, cluster: LocalCluster) -> None:
        self._process.start(cluster, cluster.cluster_dir / "bin" / "kube-scheduler",
                            scheduler_config(cluster.kubeconfig, profile(self.scheduler_name)),
                            [f"--feature-gates={FEATURE_GATES}"])

    def gang(self, name: str, size: int, snapshot: TopologySnapshot) -> GangSpec:
        key, why = required_level(snapshot, size)
        spec = native_pod_group(name, size, key)
        return GangSpec(objects=spec.objects, pod_spec=spec.pod_spec, note=why)

    def pids(self, cluster: LocalCluster) -> list[int]:
        return [self._process.pid]

    def stop(self) -> None:
        self._process.stop()
