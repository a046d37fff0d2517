"""What every route is handed: the running scheduler (or a hand-built source in tests),
and what the caller may see of it on the secure port (one place for both routes that
list gangs, `/v1/groups` and `/ui`)."""

from __future__ import annotations

from fastapi import HTTPException, Request

from scheduler.api.auth import Need, ReviewUnavailable, Scope
from scheduler.api.views import ExplainSource
from scheduler.state import GangRecord

TOPOLOGY_NEED = Need(Scope.URL, path="/v1/topology")


def source(request: Request) -> ExplainSource:
    found: ExplainSource = request.app.state.source
    return found


def visible_records(request: Request, src: ExplainSource) -> list[GangRecord]:
    """Every gang, sorted; on the secure port, only those in namespaces where the caller
    may `list pods` (503 when the API server cannot say)."""
    records = sorted(list(src.gangs.values()), key=lambda r: r.key)
    delegated, caller = request.app.state.delegated, getattr(request.state, "caller", None)
    if delegated is None or caller is None:
        return records
    try:
        visible = {ns: delegated.may_list(caller, ns)
                   for ns in sorted({r.key.namespace for r in records})}
    except ReviewUnavailable as exc:
        raise HTTPException(503, f"cannot check access now: {exc}") from None
    return [r for r in records if visible[r.key.namespace]]


def may_read_topology(request: Request) -> bool:
    """The permission `/v1/topology` needs (`get` on that URL), for pages that show it."""
    delegated, caller = request.app.state.delegated, getattr(request.state, "caller", None)
    if delegated is None or caller is None:
        return True
    try:
        return bool(delegated.allowed(caller, TOPOLOGY_NEED))
    except ReviewUnavailable as exc:
        raise HTTPException(503, f"cannot check access now: {exc}") from None
