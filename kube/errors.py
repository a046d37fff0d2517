"""Errors of the API client.

    ApiError (RuntimeError)       the API server answered with a non-2xx status
    └── ApiUnavailable            no answer at all (connection refused, timeout)

Each carries the method, path, status, the Status reason and message, and Retry-After.
"""

from __future__ import annotations


class ApiError(RuntimeError):
    """A non-2xx reply. `reason` is the Status reason (NotFound, AlreadyExists, Conflict...)."""

    def __init__(
        self, method: str, path: str, status: int, reason: str, message: str,
        retry_after: float | None = None,
    ) -> None:
        self.method, self.path, self.status = method, path, status
        self.reason, self.message, self.retry_after = reason, message, retry_after
        super().__init__(f"{method} {path}: {status} {reason}: {message}")


class ApiUnavailable(ApiError):
    def __init__(self, method: str, path: str, cause: BaseException) -> None:
        super().__init__(method, path, 0, "Unavailable", f"{type(cause).__name__}: {cause}")
        self.cause = cause
