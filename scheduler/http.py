"""The HTTP surface inside `phalanx run` (FastAPI on uvicorn, in a background thread).

For now health and readiness; the explain routes build on the same app.
"""

from __future__ import annotations

import threading
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from scheduler.loop import Scheduler


def build_app(scheduler: Scheduler) -> FastAPI:
    app = FastAPI(title="Phalanx", version="0.1.0")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Any:
        ready = scheduler.cache.synced() and scheduler.may_bind.is_set()
        body = {"ready": ready, "caches_synced": scheduler.cache.synced(),
                "leader": scheduler.may_bind.is_set()}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def serve(scheduler: Scheduler, address: str) -> uvicorn.Server:
    host, _, port = address.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(build_app(scheduler), host=host, port=int(port),
                                           log_level="warning", access_log=False))
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server
