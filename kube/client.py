"""The one choke point between Phalanx and the API server.

Raw JSON in and out (orjson over urllib3, never the generated client models: those cost
~0.3 ms per Node, 30 s at 100k nodes). Building a request is pure; sending goes through
`KubeClient.request`, which owns retries: 429 honours Retry-After, 5xx and lost connections
back off exponentially with jitter, everything else is returned to the caller as ApiError.
The kubernetes package is used only to read kubeconfig / in-cluster credentials.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3

from gcpause import gc_paused
from kube.errors import ApiError, ApiUnavailable

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
"""Answers that say nothing about the request itself: overload and server trouble."""


def transient(status: int) -> bool:
    """A failure worth retrying unchanged: overload, a server error or no answer (0)."""
    return status == 0 or status in RETRYABLE_STATUS


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_s: float = 0.05
    cap_s: float = 5.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        # "Full jitter": spreads retries of many concurrent binds apart; on top of the
        # server's Retry-After (at least that long), so that 128 binds told "1 s" do not
        # all come back in the same millisecond.
        jitter = random.uniform(0, min(self.cap_s, self.base_s * (2**attempt)))
        if retry_after is not None:
            return min(retry_after, self.cap_s * 6) + jitter
        return jitter


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Response:
    status: int
    data: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        if not self.data:
            return None
        if len(self.data) < 1 << 16:
            return orjson.loads(self.data)
        with gc_paused():  # a page of nodes is ~100k objects: GC passes would dominate
            return orjson.loads(self.data)


def _error_from(method: str, path: str, status: int, data: bytes, headers: Any) -> ApiError:
    reason, message = "Unknown", data[:500].decode(errors="replace")
    try:
        body = orjson.loads(data)
        if isinstance(body, dict):
            reason = body.get("reason") or reason
            message = body.get("message") or message
    except orjson.JSONDecodeError:
        pass
    retry_after = None
    raw = headers.get("Retry-After") if headers is not None else None
    if raw:
        try:
            retry_after = float(raw)
        except ValueError:
            retry_after = None
    return ApiError(method, path, status, reason, message, retry_after)


class KubeClient:
    """Thread-safe: urllib3 pools connections; one instance serves all threads."""

    def __init__(self, configuration: Any, *, retry: RetryPolicy = RetryPolicy(),
                 pool_size: int = 64, user_agent: str = "phalanx/0.1") -> None:
        self._config = configuration
        self.user_agent = user_agent
        """Sent with every request: the API server's audit log and metrics name the
        client by it."""
        self.host = configuration.host.rstrip("/")
        self.retry = retry
        self.transient: Counter[int] = Counter()
        """429 / 5xx answers (by status) and lost connections (0) seen: each is retried
        with backoff unless the policy's attempts are used up."""
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=pool_size,
            block=False,
            cert_reqs="CERT_REQUIRED" if configuration.verify_ssl else "CERT_NONE",
            ca_certs=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            retries=False,
        )

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None,
                        retry: RetryPolicy = RetryPolicy(), pool_size: int = 64,
                        user_agent: str = "phalanx/0.1") -> KubeClient:
        """A client for `path`, or the in-cluster service account when path is None."""
        from kubernetes import client, config  # only for reading credentials

        configuration = client.Configuration()
        if path is None:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=context, client_configuration=configuration
            )
        return cls(configuration, retry=retry, pool_size=pool_size, user_agent=user_agent)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        # auth_settings() refreshes expiring tokens (projected service-account tokens rotate).
        for auth in self._config.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[auth["key"]] = auth["value"]
        return headers

    def request(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
        body: Any = None, content_type: str = "application/json",
        timeout: float = 30.0, retry: RetryPolicy | None = None, stream: bool = False,
    ) -> Response | urllib3.BaseHTTPResponse:
        """Sends one request with the retry policy. Returns the Response (or the open
        urllib3 response when `stream`); raises ApiError for a non-2xx final answer."""
        policy = retry or self.retry
        url = self.host + path + ("?" + urlencode(query, doseq=True) if query else "")
        payload = None if body is None else (
            body if isinstance(body, bytes) else orjson.dumps(body)
        )
        headers = self._headers(content_type if payload is not None else None)
        last: ApiError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.delay(attempt - 1, last.retry_after if last else None))
            try:
                reply = self._pool.request(
                    method, url, body=payload, headers=headers, preload_content=not stream,
                    timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = ApiUnavailable(method, path, exc)
                self.transient[0] += 1
                continue
            if 200 <= reply.status < 300:
                if stream:
                    return reply
                return Response(reply.status, reply.data, reply.headers)
            data = reply.read() if stream else reply.data
            if stream:
                reply.release_conn()
            last = _error_from(method, path, reply.status, data, reply.headers)
            if reply.status not in RETRYABLE_STATUS:
                raise last
            self.transient[reply.status] += 1
        assert last is not None
        raise last

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """request() and decode the JSON body."""
        reply = self.request(method, path, **kwargs)
        assert isinstance(reply, Response)
        return reply.json()

    def get(self, path: str, **query: Any) -> Any:
        return self.call("GET", path, query=query or None)

    def create(self, path: str, obj: Any, **kwargs: Any) -> Any:
        return self.call("POST", path, body=obj, **kwargs)

    def delete(self, path: str, **query: Any) -> Any:
        return self.call("DELETE", path, query=query or None)

    def list_pages(self, path: str, query: Mapping[str, str] | None = None, *,
                   page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Yields each page of a list, following `continue` tokens."""
        params: dict[str, Any] = {**(query or {}), "limit": page_size}
        while True:
            page = self.call("GET", path, query=params)
            yield page
            token = page.get("metadata", {}).get("continue")
            if not token:
                return
            params["continue"] = token

    def list_all(self, path: str, query: Mapping[str, str] | None = None, *,
                 page_size: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every item of a paginated list and the resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        version = ""
        for page in self.list_pages(path, query, page_size=page_size):
            items.extend(page.get("items") or [])
            version = page.get("metadata", {}).get("resourceVersion", version)
        return items, version
