"""Synthetic UltraCluster: Kubernetes Node and Pod JSON shaped like AWS accelerator fleets.

Deterministic for a seed, pure (returns dicts), and shared by tests, benchmarks, the demo,
`phalanx synth` and `phalanx place`. Domain sizes are a guess: nothing public
states them, so every fan-out is a parameter.

Realism that matters to a placer:
- layer-3 domains are *ragged* (not all hold the full fan-out), as racks are in real fleets;
- existing load is *correlated*: each layer-3 domain draws its own busy fraction, so some
  are nearly full and others nearly empty, and busy nodes are fully or partly used. That
  fragments free capacity the way long-running jobs do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from topology.presets import AWS_LAYER, AWS_ZONE_ID, ZONE

GPU = "nvidia.com/gpu"
NEURON = "aws.amazon.com/neuron"
EFA = "vpc.amazonaws.com/efa"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
SYNTHETIC_LABEL = "phalanx.dev/synthetic"
LOAD_NAMESPACE = "existing-load"


@dataclass(frozen=True)
class InstanceShape:
    """An instance type as the scheduler sees it: allocatable resources and network depth."""

    instance_type: str
    prefix: str
    accelerator: str
    allocatable: dict[str, str]
    layers: int


SHAPES: dict[str, InstanceShape] = {
    "p5": InstanceShape(
        "p5.48xlarge",
        "p5",
        GPU,
        {GPU: "8", EFA: "32", "cpu": "191450m", "memory": "1938410Mi", "pods": "110"},
        layers=3,
    ),
    "trn2": InstanceShape(
        "trn2.48xlarge",
        "trn2",
        NEURON,
        {NEURON: "16", EFA: "16", "cpu": "191450m", "memory": "1938410Mi", "pods": "110"},
        layers=3,
    ),
    "p6": InstanceShape(
        "p6-b200.48xlarge",
        "p6",
        GPU,
        {GPU: "8", EFA: "8", "cpu": "191450m", "memory": "1938410Mi", "pods": "110"},
        layers=4,
    ),
}

REGION = "us-west-2"
ZONES = (("us-west-2a", "usw2-az1"), ("us-west-2b", "usw2-az2"), ("us-west-2c", "usw2-az3"))


@dataclass(frozen=True)
class ClusterSpec:
    """What to generate. `fanout[i]` is children per domain of network layer i+1; the last
    entry is nodes per bottom domain. Length must equal the shape's layer count."""

    nodes: int
    shape: str = "p5"
    fanout: tuple[int, ...] | None = None
    occupancy: float = 0.0
    seed: int = 0
    ragged: float = 0.25
    zones: int = 3
    extra_labels: dict[str, str] = field(default_factory=dict)

    def resolved_fanout(self) -> tuple[int, ...]:
        layers = SHAPES[self.shape].layers
        fanout = self.fanout or ((8, 16, 32) if layers == 3 else (4, 8, 8, 16))
        if len(fanout) != layers:
            raise ValueError(
                f"fanout: expected {layers} entries for shape {self.shape!r}, got {fanout!r}"
            )
        return fanout

    def validate(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape: expected one of {sorted(SHAPES)}, got {self.shape!r}")
        if self.nodes < 0:
            raise ValueError(f"nodes: expected >= 0, got {self.nodes}")
        if not 0.0 <= self.occupancy <= 1.0:
            raise ValueError(f"occupancy: expected a fraction in [0, 1], got {self.occupancy}")
        if not 0.0 <= self.ragged < 1.0:
            raise ValueError(f"ragged: expected a fraction in [0, 1), got {self.ragged}")
        if not 1 <= self.zones <= len(ZONES):
            raise ValueError(f"zones: expected 1..{len(ZONES)}, got {self.zones}")
        if any(f < 1 for f in self.resolved_fanout()):
            raise ValueError(f"fanout: every entry must be >= 1, got {self.fanout!r}")


def _network_id(rng: random.Random) -> str:
    return f"nn-{rng.getrandbits(68):017x}"


def _layer_paths(spec: ClusterSpec, rng: random.Random) -> list[tuple[int, tuple[str, ...]]]:
    """Walks the tree depth-first and returns (zone index, layer ids) for each node slot."""
    fanout = spec.resolved_fanout()
    slots: list[tuple[int, tuple[str, ...]]] = []
    top_index = 0
    while len(slots) < spec.nodes:
        zone = top_index % spec.zones
        top_index += 1
        stack: list[tuple[int, tuple[str, ...]]] = [(0, ())]
        while stack and len(slots) < spec.nodes:
            depth, path = stack.pop()
            path = (*path, _network_id(rng))
            if depth == len(fanout) - 1:
                low = max(1, round(fanout[-1] * (1.0 - spec.ragged)))
                for _ in range(rng.randint(low, fanout[-1])):
                    slots.append((zone, path))
                continue
            # Reversed so the stack pops children in order: node names follow tree order.
            stack.extend((depth + 1, path) for _ in range(fanout[depth]))
    return slots[: spec.nodes]


def synth_nodes(spec: ClusterSpec) -> list[dict[str, Any]]:
    """Node objects as `kubectl get nodes -o json` would show them on a Ready cluster."""
    spec.validate()
    shape = SHAPES[spec.shape]
    rng = random.Random(spec.seed)
    nodes: list[dict[str, Any]] = []
    for index, (zone_index, layer_ids) in enumerate(_layer_paths(spec, rng)):
        zone, zone_id = ZONES[zone_index]
        name = f"{shape.prefix}-{index:06d}"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": shape.instance_type,
            "topology.kubernetes.io/region": REGION,
            ZONE: zone,
            AWS_ZONE_ID: zone_id,
            SYNTHETIC_LABEL: "true",
            "type": "kwok",
        }
        labels.update(zip(AWS_LAYER, layer_ids, strict=False))
        labels.update(spec.extra_labels)
        nodes.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {KWOK_ANNOTATION: "fake"},
                },
                "spec": {},
                "status": {
                    "allocatable": dict(shape.allocatable),
                    "capacity": dict(shape.allocatable),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "phase": "Running",
                },
            }
        )
    return nodes


def synth_load(spec: ClusterSpec, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Running pods of earlier jobs bound to `nodes`: about `spec.occupancy` of the nodes are
    busy (60% of those fully, the rest partly), correlated by bottom domain."""
    spec.validate()
    if spec.occupancy == 0.0 or not nodes:
        return []
    shape = SHAPES[spec.shape]
    rng = random.Random(f"load-{spec.seed}")
    per_node = int(shape.allocatable[shape.accelerator])
    bottom_key = AWS_LAYER[shape.layers - 1]
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        by_domain.setdefault(node["metadata"]["labels"].get(bottom_key, ""), []).append(node)
    # Beta(a, b) with mean = occupancy and a wide spread: many domains near empty or full.
    spread = 1.2
    alpha = max(spec.occupancy * spread, 1e-3)
    beta = max((1.0 - spec.occupancy) * spread, 1e-3)
    pods: list[dict[str, Any]] = []
    for domain in sorted(by_domain):
        busy_fraction = rng.betavariate(alpha, beta)
        for node in by_domain[domain]:
            if rng.random() >= busy_fraction:
                continue
            used = per_node if rng.random() < 0.6 else rng.randint(1, per_node - 1)
            pods.append(_load_pod(node["metadata"]["name"], shape, used, per_node))
    return pods


def _load_pod(node: str, shape: InstanceShape, used: int, per_node: int) -> dict[str, Any]:
    cpu_m = int(shape.allocatable["cpu"].rstrip("m")) * used // per_node
    mem_mi = int(shape.allocatable["memory"].rstrip("Mi")) * used // per_node
    requests = {shape.accelerator: str(used), "cpu": f"{cpu_m}m", "memory": f"{mem_mi}Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"load-{node}",
            "namespace": LOAD_NAMESPACE,
            "labels": {"app": "existing-load", SYNTHETIC_LABEL: "true"},
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": requests, "limits": {shape.accelerator: str(used)}},
                }
            ],
            "tolerations": [{"operator": "Exists"}],
        },
        "status": {"phase": "Running"},
    }


def as_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Wraps items the way `kubectl get -o json` does (kind is NodeList or PodList)."""
    return {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": ""}, "items": items}
