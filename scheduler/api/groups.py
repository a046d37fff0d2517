"""/v1/groups: every gang Phalanx knows, one gang's placement, and why."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Response

from scheduler.api import views
from scheduler.api.deps import source
from scheduler.api.models import (
    NAME_PATTERN,
    NAMESPACE_PATTERN,
    Explanation,
    GroupDetail,
    GroupList,
    Problem,
)
from scheduler.api.views import ExplainSource
from scheduler.state import GangState

router = APIRouter(prefix="/v1/groups", tags=["groups"])
Namespace = Annotated[str, Path(pattern=NAMESPACE_PATTERN, max_length=63,
                                description="the gang's namespace (DNS-1123 label)")]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253,
                           description="PodGroup, StatefulSet or Job name")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no gang of that name is known"},
    422: {"model": Problem, "description": "malformed namespace or name"},
}


def _find(src: ExplainSource, namespace: str, name: str) -> GangState:
    state = src.gangs.get(f"{namespace}/{name}")
    if state is None:
        raise HTTPException(404, f"no gang {namespace}/{name} is known to Phalanx: it has no "
                                 f"pods with schedulerName phalanx, or they are all gone")
    return state


@router.get("", response_model=GroupList)
def list_groups(src: Annotated[ExplainSource, Depends(source)]) -> GroupList:
    states = sorted(list(src.gangs.values()), key=lambda s: s.key)
    return GroupList(groups=[views.summary(s) for s in states])


@router.get("/{namespace}/{name}", response_model=GroupDetail, responses=NOT_FOUND)
def get_group(namespace: Namespace, name: Name,
              src: Annotated[ExplainSource, Depends(source)]) -> Response:
    body = views.detail(_find(src, namespace, name), src)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/{namespace}/{name}/explain", response_model=Explanation, responses=NOT_FOUND)
def explain_group(namespace: Namespace, name: Name,
                  src: Annotated[ExplainSource, Depends(source)]) -> Explanation:
    return views.explanation(_find(src, namespace, name))
