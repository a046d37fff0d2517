"""Topology presets: which node labels name the network levels, top (farthest) to bottom.

A preset is pure data. The AWS preset's zone level falls back to the generic zone label,
and its fourth network layer exists only on instance families that publish it (p6-b200),
so the tree is as deep as the labels the nodes actually carry (docs/design.md).

Where nodes carry an NVLink domain, it is the lowest level, below the rack: AWS's
`topology.k8s.aws/ultraserver-id` (UltraServers, HyperPod), Topograph's
`accelerator.topograph.run/domain`, or NVIDIA GPU feature discovery's
`nvidia.com/gpu.clique` (`<NVLink domain UUID>.<clique id>`: the GPUs of one clique share
NVLink; the value is unique cluster-wide, so it nests under whatever rack holds it).
"""

from __future__ import annotations

from dataclasses import dataclass

HOSTNAME = "kubernetes.io/hostname"
"""The node itself: the level below every preset's labels."""
ZONE = "topology.kubernetes.io/zone"
AWS_ZONE_ID = "topology.k8s.aws/zone-id"
AWS_LAYER = tuple(f"topology.k8s.aws/network-node-layer-{i}" for i in range(1, 5))
GPU_CLIQUE = "nvidia.com/gpu.clique"
AWS_ULTRASERVER = "topology.k8s.aws/ultraserver-id"
TOPOGRAPH_TIERS = tuple(f"fabric.topograph.run/tier-{i}" for i in range(5, -1, -1))
"""Topograph v1.x fabric tiers, farthest first: tier-0 is the switch nearest the node; how
many tiers there are depends on the fabric (tier-1 and tier-0 are the common case)."""
TOPOGRAPH_DOMAIN = "accelerator.topograph.run/domain"
TOPOGRAPH_LEGACY = tuple(
    f"network.topology.nvidia.com/{name}"
    for name in ("datacenter", "spine", "block", "accelerator")
)
"""Topograph before v1.0 (kept as the `topograph-legacy` preset)."""
GKE = tuple(
    f"cloud.google.com/gce-topology-{name}" for name in ("block", "subblock", "host")
)


@dataclass(frozen=True)
class Level:
    """One level of the domain tree, named by the label key that carries its value."""

    key: str
    fallbacks: tuple[str, ...] = ()
    optional: bool = False
    """An optional level is dropped when no node carries it (AWS layer-4 on p5 clusters)."""

    def value(self, labels: dict[str, str]) -> str | None:
        for key in (self.key, *self.fallbacks):
            found = labels.get(key)
            if found:
                return found
        return None


@dataclass(frozen=True)
class Preset:
    name: str
    levels: tuple[Level, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(level.key for level in self.levels)


PRESETS: dict[str, Preset] = {
    "aws": Preset(
        "aws",
        (
            Level(AWS_ZONE_ID, fallbacks=(ZONE,)),
            Level(AWS_LAYER[0]),
            Level(AWS_LAYER[1]),
            Level(AWS_LAYER[2]),
            Level(AWS_LAYER[3], optional=True),
            Level(AWS_ULTRASERVER, fallbacks=(GPU_CLIQUE,), optional=True),
        ),
    ),
    "topograph": Preset(
        "topograph",
        (*(Level(key, optional=key not in TOPOGRAPH_TIERS[-2:]) for key in TOPOGRAPH_TIERS),
         Level(TOPOGRAPH_DOMAIN, fallbacks=(GPU_CLIQUE,), optional=True)),
    ),
    "topograph-legacy": Preset("topograph-legacy", tuple(Level(key) for key in TOPOGRAPH_LEGACY)),
    "gke": Preset("gke", tuple(Level(key) for key in GKE)),
}


def short_level(key: str) -> str:
    """A level's label key without its prefix, for text: `network-node-layer-3`."""
    return key.rsplit("/", 1)[-1]


def resolve_preset(name_or_keys: str | list[str] | tuple[str, ...]) -> Preset:
    """A preset by name, or a custom one from an ordered list of label keys."""
    if isinstance(name_or_keys, str):
        try:
            return PRESETS[name_or_keys]
        except KeyError:
            known = ", ".join(sorted(PRESETS))
            raise ValueError(
                f"topology preset: expected one of {known} or a list of label keys, "
                f"got {name_or_keys!r}"
            ) from None
    keys = list(name_or_keys)
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise ValueError(f"topology levels: expected a non-empty list of label keys, got {keys!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"topology levels: label keys must be distinct, got {keys!r}")
    return Preset("custom", tuple(Level(key) for key in keys))


def effective_levels(preset: Preset, node_labels: list[dict[str, str]]) -> tuple[Level, ...]:
    """The preset's levels minus optional ones that no node carries."""
    return tuple(
        level
        for level in preset.levels
        if not level.optional
        or any(key in labels for labels in node_labels for key in (level.key, *level.fallbacks))
    )
