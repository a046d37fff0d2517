"""/v1/topology: the domain tree with node counts and free capacity per domain.

No `from __future__ import annotations` here: the route is built in a closure over
`levels`, and FastAPI must resolve its annotations at definition time."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query

from scheduler.api import views
from scheduler.api.deps import source
from scheduler.api.models import Problem, Topology
from scheduler.api.views import ExplainSource


def make_router(levels: tuple[str, ...]) -> APIRouter:
    """`levels`: every level key the configured preset can yield, published as the
    parameter's enum (an optional level absent from the cluster gives an empty answer)."""
    router = APIRouter(prefix="/v1/topology", tags=["topology"])

    @router.get("", response_model=Topology,
                responses={422: {"model": Problem, "description": "unknown level or bad "
                                                                  "parameter"}})
    def get_topology(
        src: Annotated[ExplainSource, Depends(source)],
        level: Annotated[str | None, Query(description="one level's label key",
                                           json_schema_extra={"enum": list(levels)})] = None,
        prefix: Annotated[str, Query(max_length=1024,
                                     description="only domains whose path starts so")] = "",
        limit: Annotated[int, Query(ge=1, le=100_000,
                                    description="domains per level at most")] = 1000,
    ) -> Topology:
        if level is not None and level not in levels:
            raise HTTPException(422, f"query parameter level: expected one of {list(levels)}, "
                                     f"got {level!r}")
        return views.topology(src.topology_snapshot(), level, prefix, limit)

    return router
