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
    """The first filter a node failed, in kube-scheduler's plugin order."""

    NODE_UNSCHEDULABLE = "node(s) were unschedulable"
    NODE_NOT_READY = "node(s) were not ready"
    UNTOLERATED_TAINT = "node(s) had untolerated taint {{{detail}}}"
    NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
    INSUFFICIENT = "Insufficient {detail}"


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
