"""Puts a synthetic UltraCluster (topology.synthetic) onto a live cluster and waits for KWOK
to turn its nodes Ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kube import KubeClient
from kube.resources import NODES
from localcluster.bulk import BulkReport, create_all, ensure_namespace, wait_until
from localcluster.cluster import node_ready
from topology.synthetic import LOAD_NAMESPACE, SYNTHETIC_LABEL, ClusterSpec, synth_load, synth_nodes


@dataclass(frozen=True)
class Populated:
    nodes: BulkReport
    load: BulkReport | None
    ready_s: float


LIFECYCLE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def schedulable(node: dict[str, Any]) -> bool:
    """Ready, and the node-lifecycle controller has lifted its not-ready taint (with
    thousands of nodes created at once it lags KWOK's Ready by seconds)."""
    taints = (node.get("spec") or {}).get("taints") or ()
    return node_ready(node) and not any(t.get("key") in LIFECYCLE_TAINTS for t in taints)


def ready_synthetic_nodes(kube: KubeClient) -> int:
    items, _ = kube.list_all(NODES.path(),
                             {"labelSelector": f"{SYNTHETIC_LABEL}=true"})
    return sum(1 for node in items if schedulable(node))


def populate(kube: KubeClient, spec: ClusterSpec, *, concurrency: int = 48,
             ready_timeout: float = 300) -> Populated:
    """Creates the spec's nodes (and existing load, if any) and waits until all are Ready."""
    nodes = synth_nodes(spec)
    node_report = create_all(kube, nodes, concurrency=concurrency)
    wanted = len(nodes)
    ready_s = wait_until(lambda: ready_synthetic_nodes(kube) >= wanted, ready_timeout,
                         f"{wanted} synthetic nodes Ready and untainted")
    load_report = None
    pods: list[dict[str, Any]] = synth_load(spec, nodes)
    if pods:
        ensure_namespace(kube, LOAD_NAMESPACE)
        for pod in pods:
            pod.pop("status", None)
        load_report = create_all(kube, pods, concurrency=concurrency)
    return Populated(node_report, load_report, ready_s)
