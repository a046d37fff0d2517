"""The explain API inside `phalanx run` (FastAPI on uvicorn): one router per resource,
response models in `models`, record-to-model views in `views`, wiring in `server`."""

from scheduler.api.server import build_app, serve

__all__ = ["build_app", "serve"]
