"""The running scheduler (or a hand-built source in tests), handed to every route."""

from __future__ import annotations

from fastapi import Request

from scheduler.api.views import ExplainSource


def source(request: Request) -> ExplainSource:
    found: ExplainSource = request.app.state.source
    return found
