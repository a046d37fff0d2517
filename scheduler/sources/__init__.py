"""Gang sources: one module per way pods are grouped into gangs, behind one protocol
(`base.GangSource`), registered here in precedence order. When several sources would
claim a pod, the first in `sources()` wins, so a pod belongs to exactly one gang:

1. an explicit group another scheduler defines, most specific first: scheduler-plugins'
   PodGroup label, Kubernetes' own `spec.schedulingGroup`, Volcano's group annotation,
   Kueue's plain-pod group label (a training-operator job in gang mode is read here, from
   the PodGroup it made);
2. a workload framework: JobSet (and Trainer v2), LeaderWorkerSet, training-operator;
3. the pod's controller: StatefulSet or Job (JobSet's Jobs and LWS's StatefulSets are
   claimed above, as parts of their workload, before this).
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.sources.base import GangSource, GangSpecError, ObjectLookup
from scheduler.sources.jobset import JobSetSource
from scheduler.sources.kueue import KueueSource
from scheduler.sources.lws import LeaderWorkerSetSource
from scheduler.sources.native import NativePodGroupSource
from scheduler.sources.owner import OwnerSource
from scheduler.sources.podgroup import PodGroupSource
from scheduler.sources.training import TrainingJobSource
from scheduler.sources.volcano import VolcanoSource

__all__ = ["GangSource", "GangSpecError", "ObjectLookup", "sources"]


def sources(accelerators: Sequence[str] | None) -> tuple[GangSource, ...]:
    """Every source, in precedence order. `accelerators`: the resources that make a pod
    of a JobSet or of a StatefulSet/Job a gang member (None: every such pod, for
    `phalanx place`, where the manifest says it is a gang)."""
    return (PodGroupSource(), NativePodGroupSource(), VolcanoSource(), KueueSource(),
            JobSetSource(accelerators), LeaderWorkerSetSource(), TrainingJobSource(),
            OwnerSource(accelerators))
