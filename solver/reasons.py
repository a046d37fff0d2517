"""Why a node was excluded, and whether a gang that does not fit ever could: typed codes.

Decisions (retry or not, which remedy to offer) are made on these codes; the text is
their rendering, kube-scheduler's own wording where it has one, produced only at the edge
(Events, conditions, the CLI and the HTTP API).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FitCode(Enum):
    """kube-scheduler's status codes for a pod that does not fit, at gang granularity."""

    UNSCHEDULABLE = "Unschedulable"
    """Does not fit now; may fit when capacity frees up (retry on cluster change)."""
    UNRESOLVABLE = "UnschedulableAndUnresolvable"
    """Can never fit as asked (more than the whole cluster, no domain of the required
    level could ever hold it): retried only when the nodes or the gang itself change."""


class ExclusionCode(Enum):
    """The first filter a node failed, in kube-scheduler's plugin order, and the
    whole-pod reasons (refusals) that exclude every node at once."""

    NODE_UNSCHEDULABLE = "node(s) were unschedulable"
    NODE_NOT_READY = "node(s) were not ready"
    UNTOLERATED_TAINT = "node(s) had untolerated taint {{{detail}}}"
    NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
    NODE_PORTS = "node(s) didn't have free ports for the requested pod ports"
    INSUFFICIENT = "Insufficient {detail}"
    VOLUME_NODE_AFFINITY = "node(s) didn't match PersistentVolume's node affinity"
    VOLUME_UNAVAILABLE = "node(s) didn't find available persistent volumes to bind"
    VOLUME_ZONE = "node(s) had no available volume zone"
    VOLUME_LIMIT = "node(s) exceed max volume count"
    SPREAD_LABEL = ("node(s) didn't match pod topology spread constraints (missing required "
                    "label)")
    SPREAD = "node(s) didn't match pod topology spread constraints"
    POD_AFFINITY = "node(s) didn't match pod affinity rules"
    POD_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
    EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
    # Whole-pod reasons: every node at once.
    UNBOUND_IMMEDIATE_CLAIM = "pod has unbound immediate PersistentVolumeClaims"
    CLAIM_NOT_FOUND = 'persistentvolumeclaim "{detail}" not found'
    CLAIM_DELETING = 'persistentvolumeclaim "{detail}" is being deleted'
    CLAIM_LOST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
    CLAIM_IN_USE = ("node(s) unavailable due to PersistentVolumeClaim with ReadWriteOncePod "
                    "access mode already in-use by another pod")
    RESOURCE_CLAIMS = ("pod uses DRA resource claims ({detail}), which Phalanx does not "
                       "allocate: schedule it with kube-scheduler")
    IN_TREE_VOLUME = ("pod uses in-tree volume type {detail}, whose node conflicts Phalanx "
                      "does not check: schedule it with kube-scheduler")
    UNSUPPORTED_GANG_RULE = "{detail}"
    """A combination of rules among a gang's own pods that Phalanx refuses, named."""
    SLICE_HOME_FULL = "{detail}"
    """Missing members of a slice cannot join it in its domain (room may free up)."""


@dataclass(frozen=True)
class Exclusion:
    code: ExclusionCode
    detail: str = ""
    """The taint or the resource the code names; empty for codes without one."""

    def render(self) -> str:
        return self.code.value.format(detail=self.detail)

    def __str__(self) -> str:
        return self.render()


def by_count(excluded: dict[Exclusion, int]) -> list[tuple[Exclusion, int]]:
    """Most nodes first, then by text: the order every rendering of exclusions uses."""
    return sorted(excluded.items(), key=lambda kv: (-kv[1], kv[0].render()))
