"""Wiring: the FastAPI app over an ExplainSource, served by uvicorn in a thread: plain
HTTP on loopback, and HTTPS with delegated authentication and authorisation."""

from __future__ import annotations

import threading

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import RequestResponseEndpoint

from scheduler.api import domains, groups, health, ui
from scheduler.api.auth import (
    PROXIED_AUTHORIZATION,
    Delegated,
    ReviewUnavailable,
    Scope,
    need_of,
)
from scheduler.api.tls import Reloader, ServingPair
from scheduler.api.views import ExplainSource


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg')} (got {error.get('input')!r})")
    return "; ".join(parts)


def build_app(src: ExplainSource, levels: tuple[str, ...],
              delegated: Delegated | None = None) -> FastAPI:
    """With `delegated`, every request but the probes needs a bearer token the API server
    accepts and the permission `auth.need_of` names (401 and 403 otherwise, JSON)."""
    app = FastAPI(title="Phalanx explain API", version="0.1.0",
                  description="Where each gang went and why; why a gang is still pending.")
    app.state.source = src
    app.state.delegated = delegated
    if delegated is not None:
        _guard(app, delegated)
    for router in (health.router, groups.router, domains.make_router(levels), ui.router):
        app.include_router(router)

    app.add_exception_handler(groups.Ambiguity, groups.ambiguous_handler)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def problem(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    return app


def _refused(status: int, detail: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="phalanx"'} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _guard(app: FastAPI, delegated: Delegated) -> None:
    @app.middleware("http")
    async def check(request: Request, call_next: RequestResponseEndpoint) -> Response:
        need = need_of(request.url.path)
        if need.scope is Scope.OPEN:
            return await call_next(request)
        header = (request.headers.get("authorization")
                  or request.headers.get(PROXIED_AUTHORIZATION, ""))
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _refused(401, "authentication required: send a bearer token "
                                 "(Authorization: Bearer TOKEN) the API server accepts")
        try:
            caller = await run_in_threadpool(delegated.authenticate, token)
            if caller is None:
                return _refused(401, "the API server did not accept this token (TokenReview)")
            if need.scope is not Scope.CALLER and not await run_in_threadpool(
                    delegated.allowed, caller, need):
                what = (f'get pods in namespace "{need.namespace}"'
                        if need.scope is Scope.NAMESPACE else f"get {need.path}")
                return _refused(403, f'forbidden: user "{caller.user}" may not {what}')
        except ReviewUnavailable as exc:
            return _refused(503, f"cannot check access now: {exc}")
        request.state.caller = caller
        return await call_next(request)


def serve(src: ExplainSource, address: str, levels: tuple[str, ...]) -> uvicorn.Server:
    """Plain HTTP without authentication (config validation keeps it on loopback)."""
    host, _, port = address.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(build_app(src, levels), host=host.strip("[]"),
                                           port=int(port), log_level="warning",
                                           access_log=False))
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server


def serve_secure(src: ExplainSource, address: str, levels: tuple[str, ...],
                 delegated: Delegated, pair: ServingPair) -> tuple[uvicorn.Server, Reloader]:
    """HTTPS on `address` with the guard; the pair is reloaded when its files change."""
    host, _, port = address.rpartition(":")
    config = uvicorn.Config(build_app(src, levels, delegated), host=host.strip("[]"),
                            port=int(port), log_level="warning", access_log=False,
                            ssl_certfile=pair.cert_file, ssl_keyfile=pair.key_file)
    config.load()  # builds config.ssl now, so the reloader holds the live context
    assert config.ssl is not None
    reloader = Reloader(config.ssl, pair)
    reloader.start()
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="https", daemon=True).start()
    return server, reloader
