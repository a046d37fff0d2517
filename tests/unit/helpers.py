"""Small hand-built clusters for solver and topology tests."""

from __future__ import annotations

from topology.presets import resolve_preset
from topology.records import NodeRecord, Taint
from topology.snapshot import TopologySnapshot, build_snapshot

LEVELS = ("zone", "block", "rack")
GPU = "nvidia.com/gpu"


def node(name: str, path: tuple[str, ...], gpus: int = 8, *, taints: tuple[Taint, ...] = (),
         ready: bool = True, unschedulable: bool = False,
         extra: dict[str, str] | None = None) -> NodeRecord:
    labels = dict(zip(LEVELS, path, strict=False))
    labels["kubernetes.io/hostname"] = name  # as the kubelet labels every node
    labels.update(extra or {})
    return NodeRecord(name, labels, {GPU: gpus, "cpu": 192_000, "memory": 2**40, "pods": 110},
                      taints, unschedulable, ready)


def snapshot(nodes: list[NodeRecord], used: dict[str, dict[str, int]] | None = None,
             levels: tuple[str, ...] = LEVELS) -> TopologySnapshot:
    return build_snapshot(nodes, used or {}, resolve_preset(list(levels)))


def cluster(racks: dict[tuple[str, str, str], list[int]]) -> TopologySnapshot:
    """racks: (zone, block, rack) -> free GPUs of each node in it."""
    nodes, used = [], {}
    for path, free in racks.items():
        for i, gpus in enumerate(free):
            name = f"{'-'.join(path)}-n{i}"
            nodes.append(node(name, path))
            used[name] = {GPU: 8 - gpus}
    return snapshot(nodes, used)
