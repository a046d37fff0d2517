"""/v1/groups: every gang Phalanx knows, one gang's placement, and why.

A gang is named by namespace and name; when two gangs of different kinds share a name in
a namespace (a Job and a StatefulSet `train`), the reply is 409 listing them and
`?kind=` selects one. `?kind=` is accepted whenever given."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from scheduler.api import views
from scheduler.api.deps import source, visible_records
from scheduler.api.models import (
    KIND_PATTERN,
    NAME_PATTERN,
    NAMESPACE_PATTERN,
    Ambiguous,
    Candidate,
    Explanation,
    GroupDetail,
    GroupList,
    Problem,
)
from scheduler.api.views import ExplainSource
from scheduler.state import GangRecord

router = APIRouter(prefix="/v1/groups", tags=["groups"])
Namespace = Annotated[str, Path(pattern=NAMESPACE_PATTERN, max_length=63,
                                description="the gang's namespace (DNS-1123 label)")]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253,
                           description="the name of the object that defines the gang")]
Kind = Annotated[str | None, Query(pattern=KIND_PATTERN, max_length=253,
                                   description="PodGroup, StatefulSet, Job, ...: needed "
                                               "only when the name is shared")]
LOOKUP_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no gang of that name is known"},
    409: {"model": Ambiguous, "description": "several gangs share the name: add ?kind="},
    422: {"model": Problem, "description": "malformed namespace, name or kind"},
}


class Ambiguity(Exception):
    def __init__(self, body: Ambiguous) -> None:
        self.body = body


def _find(src: ExplainSource, namespace: str, name: str, kind: str | None) -> GangRecord:
    matches = sorted((r for key, r in list(src.gangs.items())
                      if key.namespace == namespace and key.name == name
                      and (kind is None or key.kind == kind)), key=lambda r: r.key)
    if not matches:
        what = f"{kind} {namespace}/{name}" if kind else f"{namespace}/{name}"
        raise HTTPException(404, f"no gang {what} is known to Phalanx: it has no pods with "
                                 f"schedulerName phalanx, or they are all gone")
    if len(matches) > 1:
        raise Ambiguity(Ambiguous(
            detail=f"{len(matches)} gangs are named {namespace}/{name}: choose one with "
                   f"?kind= ({', '.join(r.key.kind for r in matches)})",
            candidates=[Candidate(kind=r.key.kind, name=r.key.name) for r in matches]))
    return matches[0]


def ambiguous_handler(_: object, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Ambiguity)
    return JSONResponse(exc.body.model_dump(), status_code=409)


@router.get("", response_model=GroupList)
def list_groups(request: Request, src: Annotated[ExplainSource, Depends(source)]) -> GroupList:
    """Every gang; on the secure port, only those in namespaces where the caller may
    `list pods`."""
    records = visible_records(request, src)
    return GroupList(groups=[views.summary(r) for r in records])


@router.get("/{namespace}/{name}", response_model=GroupDetail, responses=LOOKUP_ERRORS)
def get_group(namespace: Namespace, name: Name,
              src: Annotated[ExplainSource, Depends(source)], kind: Kind = None) -> Response:
    body = views.detail(_find(src, namespace, name, kind), src)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/{namespace}/{name}/explain", response_model=Explanation,
            responses=LOOKUP_ERRORS)
def explain_group(namespace: Namespace, name: Name,
                  src: Annotated[ExplainSource, Depends(source)],
                  kind: Kind = None) -> Explanation:
    return views.explanation(_find(src, namespace, name, kind))
