"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from scheduler.api.deps import source
from scheduler.api.models import Readiness
from scheduler.api.views import ExplainSource
from scheduler.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "caches stale or not leader"}})
def readyz(src: Annotated[ExplainSource, Depends(source)]) -> JSONResponse:
    synced, leader = src.readiness()
    body = Readiness(ready=synced and leader, caches_synced=synced, leader=leader)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}})
def metrics(src: Annotated[ExplainSource, Depends(source)]) -> Response:
    return Response(src.metrics.render(), media_type=CONTENT_TYPE)
