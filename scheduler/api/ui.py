"""/ui: the topology map page, and /ui/content, the part of it its script refreshes.

Same access as the JSON routes: a caller (on the secure port), gangs only from
namespaces where the caller may `list pods`, the map only if the caller may `get
/v1/topology` (the page says so otherwise)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from scheduler.api import page
from scheduler.api.deps import may_read_topology, source, visible_records
from scheduler.api.models import NAMESPACE_PATTERN, Problem
from scheduler.api.views import ExplainSource

router = APIRouter(prefix="/ui", tags=["ui"])
NamespaceFilter = Annotated[str, Query(pattern=f"^$|{NAMESPACE_PATTERN}", max_length=63,
                                       description="only this namespace's gangs")]
PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "the page (HTML)",
          "content": {"text/html": {"schema": {"type": "string"}}}},
    422: {"model": Problem, "description": "malformed namespace filter (JSON)"}}
"""Documented by hand: an HTML route's errors are JSON like every other route's."""
HIDDEN = ("the topology map is hidden: you may not get /v1/topology "
          "(a ClusterRole with nonResourceURLs: [/v1/topology], verbs: [get] grants it)")


def _view(request: Request, src: ExplainSource, namespace: str) -> page.MapView:
    records = visible_records(request, src)
    hidden = "" if may_read_topology(request) else HIDDEN
    return page.map_view(src.topology_snapshot(), records, namespace, hidden)


@router.get("", response_class=Response, responses=PAGE)
def map_page(request: Request, src: Annotated[ExplainSource, Depends(source)],
             namespace: NamespaceFilter = "") -> HTMLResponse:
    return HTMLResponse(page.render_page(_view(request, src, namespace)))


@router.get("/content", response_class=Response, responses=PAGE)
def map_content(request: Request, src: Annotated[ExplainSource, Depends(source)],
                namespace: NamespaceFilter = "") -> HTMLResponse:
    return HTMLResponse(page.render_content(_view(request, src, namespace)))
