"""Gang sources: one module per way pods are grouped into gangs, behind one protocol
(`base.GangSource`), registered here in precedence order. When several sources would
claim a pod, the first in `sources()` wins, so a pod belongs to exactly one gang."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.sources.base import GangSource, GangSpecError, ObjectLookup
from scheduler.sources.owner import OwnerSource
from scheduler.sources.podgroup import PodGroupSource

__all__ = ["GangSource", "GangSpecError", "ObjectLookup", "sources"]


def sources(accelerators: Sequence[str] | None) -> tuple[GangSource, ...]:
    """Every source, most specific first: an explicit PodGroup label beats the
    controller that owns the pod. `accelerators`: the resources that make an owned pod
    a gang member (None: every owned pod, for `phalanx place`)."""
    return (PodGroupSource(), OwnerSource(accelerators))
