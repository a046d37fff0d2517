"""The cluster's own kube-scheduler v1.36 as a peer, twice: with its default plugins
(`kube-scheduler`), and with its in-tree gang scheduling (`kube-scheduler-gang`: KEP-4671,
alpha; the GenericWorkload and GangScheduling gates localcluster enables on every
cluster, a `scheduling.k8s.io/v1alpha2` PodGroup with `gang.minCount` per gang, pods
naming it in `spec.schedulingGroup`, admitted all or nothing).

Both use the process kwokctl runs for the cluster (client QPS limits lifted), so there is
nothing to build or start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.peers import ApiObject, GangSpec, cluster_scheduler_pid
from kube.resources import NATIVE_POD_GROUPS

if TYPE_CHECKING:
    from localcluster.cluster import LocalCluster
    from topology.snapshot import TopologySnapshot


def native_pod_group(name: str, size: int, topology_key: str | None = None) -> GangSpec:
    """A gang as Kubernetes' own PodGroup (all `size` pods or none) and the pods'
    `spec.schedulingGroup` naming it; with `topology_key`, the one required topology
    constraint the API allows (TopologyAwareWorkloadScheduling: every pod in one domain
    of that label)."""
    spec: dict[str, object] = {"schedulingPolicy": {"gang": {"minCount": size}}}
    if topology_key is not None:
        spec["schedulingConstraints"] = {"topology": [{"key": topology_key}]}
    group = {"apiVersion": NATIVE_POD_GROUPS.api_version, "kind": "PodGroup",
             "metadata": {"name": name}, "spec": spec}
    return GangSpec(objects=(ApiObject(NATIVE_POD_GROUPS, group),),
                    pod_spec={"schedulingGroup": {"podGroupName": name}})


class KubeScheduler:
    """kube-scheduler with its default plugins: pods one by one, no gang, no topology."""

    name = "kube-scheduler"
    scheduler_name = "default-scheduler"
    workloads = frozenset({"statefulset", "jobset"})

    def prepare(self) -> None:
        """The control plane's own binary: built with the cluster."""

    def start(self, cluster: LocalCluster) -> None:
        """Already running: kwokctl started it with the cluster."""

    def gang(self, name: str, size: int, snapshot: TopologySnapshot) -> GangSpec:
        return GangSpec()

    def pids(self, cluster: LocalCluster) -> list[int]:
        return [cluster_scheduler_pid(cluster)]

    def stop(self) -> None:
        """The cluster's teardown stops it."""


class KubeSchedulerGang(KubeScheduler):
    """The same process with a PodGroup per gang: GangScheduling admits it all or none.
    StatefulSets only: a JobSet's pods name no PodGroup."""

    name = "kube-scheduler-gang"
    workloads = frozenset({"statefulset"})

    def gang(self, name: str, size: int, snapshot: TopologySnapshot) -> GangSpec:
        return native_pod_group(name, size)
