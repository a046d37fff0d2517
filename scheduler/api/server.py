"""Wiring: the FastAPI app over an ExplainSource, served by uvicorn in a thread."""

from __future__ import annotations

import threading

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from scheduler.api import domains, groups, health
from scheduler.api.views import ExplainSource


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg')} (got {error.get('input')!r})")
    return "; ".join(parts)


def build_app(src: ExplainSource, levels: tuple[str, ...]) -> FastAPI:
    app = FastAPI(title="Phalanx explain API", version="0.1.0",
                  description="Where each gang went and why; why a gang is still pending.")
    app.state.source = src
    for router in (health.router, groups.router, domains.make_router(levels)):
        app.include_router(router)

    app.add_exception_handler(groups.Ambiguity, groups.ambiguous_handler)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def problem(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    return app


def serve(src: ExplainSource, address: str, levels: tuple[str, ...]) -> uvicorn.Server:
    host, _, port = address.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(build_app(src, levels), host=host, port=int(port),
                                           log_level="warning", access_log=False))
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server
