"""The one choke point between Phalanx and the API server.

Raw JSON in and out (orjson over urllib3, never the generated client models: those cost
~0.3 ms per Node, 30 s at 100k nodes). Building a request is pure; sending goes through
`KubeClient.request`, which owns retries: 429 honours Retry-After, 5xx and lost connections
back off exponentially with jitter, everything else is returned to the caller as ApiError.
The kubernetes package is used only to read kubeconfig / in-cluster credentials.

Bursts of small writes (a gang's binds) take `KubeClient.burst`, an HTTP/1.1 client on
asyncio in one thread of its own (`Burst`): a request costs a few tens of microseconds of
Python there, against ~0.3 ms through urllib3 from a pool of threads fighting for the GIL,
and on two cores every millisecond the client burns is one the API server cannot use.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import concurrent.futures
import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import orjson
import urllib3

from gcpause import gc_paused
from kube.errors import ApiError, ApiUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)
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
    raw = headers.get("retry-after") if headers is not None else None  # any case
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
        self._burst: Burst | None = None
        self._burst_lock = threading.Lock()
        self._binding = 0
        self._binds_done = threading.Condition()
        self._burst_connections = pool_size
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

    def authorization(self) -> str | None:
        """The `Authorization` header value the credentials give ("Bearer ..."), None
        for client certificates: what a caller forwards where a proxy strips it."""
        return self._headers(None).get("authorization") or self._headers(None).get(
            "Authorization")

    def request(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
        body: Any = None, content_type: str = "application/json",
        timeout: float = 30.0, retry: RetryPolicy | None = None, stream: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Response | urllib3.BaseHTTPResponse:
        """Sends one request with the retry policy. Returns the Response (or the open
        urllib3 response when `stream`); raises ApiError for a non-2xx final answer.
        `headers` are added to the client's own (credentials, content type)."""
        policy = retry or self.retry
        url = self.host + path + ("?" + urlencode(query, doseq=True) if query else "")
        payload = None if body is None else (
            body if isinstance(body, bytes) else orjson.dumps(body)
        )
        headers = {**self._headers(content_type if payload is not None else None),
                   **(headers or {})}
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

    def burst(self) -> Burst:
        """The asyncio client for bursts of small requests (made on first use; as many
        connections as the urllib3 pool)."""
        with self._burst_lock:
            if self._burst is None:
                self._burst = Burst(self, self._burst_connections)
            return self._burst

    @contextmanager
    def binding(self) -> Iterator[None]:
        """Marks binds in flight: writes that can wait (Events, status) hold back until
        they are done (`after_binds`), so they never compete with a gang's binds."""
        with self._binds_done:
            self._binding += 1
        try:
            yield
        finally:
            with self._binds_done:
                self._binding -= 1
                self._binds_done.notify_all()

    def after_binds(self, timeout: float) -> None:
        """Waits until no binds are in flight, or `timeout` (so a scheduler binding
        without pause still writes its Events)."""
        with self._binds_done:
            self._binds_done.wait_for(lambda: self._binding == 0, timeout)

    def close(self) -> None:
        with self._burst_lock:
            if self._burst is not None:
                self._burst.close()
                self._burst = None
        self._pool.clear()

    def stream(self, path: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        """GET `path` and return the open response, read line by line (a watch); the
        caller releases it."""
        reply = self.request("GET", path, stream=True, **kwargs)
        assert not isinstance(reply, Response)
        return reply

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


HEADERS_S = 10.0
KEEP_WARM_S = 45.0
"""Half the API server's 90 s idle timeout (k8s.io/apiserver secure_serving.go)."""
TLS_READ_BUFFER = 16 * 1024
"""Bytes asyncio's TLS protocol reads into at a time: one TLS record's plaintext (16 KiB,
the most a read returns). asyncio allocates its read buffer per connection at 256 KiB
and fills it with zeros, so each connection cost 256 KiB resident whatever it carried:
a binder's 256 connections held 64 MiB, opened at the first big burst and kept (a step
in RSS the soak judged as growth; measured: 128 local TLS connection pairs +73 MiB,
+14 MiB with 16 KiB)."""


class Burst:
    """HTTP/1.1 keep-alive connections on an event loop in one thread of its own.

    Why not urllib3 from threads: a bind is ~300 bytes each way, so the cost of sending it
    is all Python overhead; a hundred threads each running urllib3 spend most of theirs
    taking turns at the GIL. Here one thread writes prebuilt request bytes and parses the
    status line, the headers it needs and the body: a fraction of the CPU per request,
    with the same TLS settings, credentials, error types (`ApiError`, `ApiUnavailable`)
    and statuses as `KubeClient.request`. Retries are the caller's (the binder checks
    leadership before each attempt). A connection reused after idling that the server
    closed meanwhile (no byte of an answer) is replaced once, at once, as urllib3 does.
    """

    def __init__(self, kube: KubeClient, connections: int) -> None:
        parts = urlsplit(kube.host)
        self.kube = kube
        self.authority = parts.netloc
        self.address = (parts.hostname or "localhost",
                        parts.port or (443 if parts.scheme == "https" else 80))
        self.tls = _tls_context(kube._config) if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.headers: dict[str | None, tuple[float, str]] = {}
        self.in_flight = 0
        self.warmer: concurrent.futures.Future[None] | None = None
        self.opened = 0
        """Connections opened so far (TLS handshakes: what warm() saves a burst)."""
        # A class attribute (asyncio offers no per-connection setting): every asyncio
        # TLS connection of the process reads 16 KiB at a time from here on, the explain
        # API's HTTPS server's too, and each reads one record at a time anyway.
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        self.loop = asyncio.new_event_loop()
        self.slots = asyncio.Semaphore(connections)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="kube-burst")
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the burst thread and waits for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def head(self, method: str, path: str, content_type: str | None, length: int) -> bytes:
        """The request line and headers. The credentials part is rebuilt every HEADERS_S
        (auth_settings() refreshes rotating tokens; per request it would be most of the
        cost of a bind)."""
        now = time.monotonic()
        cached = self.headers.get(content_type)
        if cached is None or now - cached[0] > HEADERS_S:
            fixed = "".join(f"{k}: {v}\r\n" for k, v in self.kube._headers(content_type).items())
            cached = self.headers[content_type] = (now, f"Host: {self.authority}\r\n" + fixed)
        length_line = (f"Content-Length: {length}\r\n"
                       if length or method in ("POST", "PUT", "PATCH") else "")
        return f"{method} {self.prefix}{path} HTTP/1.1\r\n{cached[1]}{length_line}\r\n".encode()

    async def request(self, method: str, path: str, body: bytes | None = None, *,
                      content_type: str = "application/json", timeout: float = 30.0
                      ) -> Response:
        """One request, no retries."""
        payload = body or b""
        message = self.head(method, path, content_type if body is not None else None,
                            len(payload)) + payload
        async with self.slots:
            self.in_flight += 1
            try:
                return await self._exchange(method, path, message, timeout)
            finally:
                self.in_flight -= 1

    async def retried(self, method: str, path: str, body: bytes | None = None, *,
                      content_type: str = "application/json", timeout: float = 30.0
                      ) -> Response:
        """request() with the client's retry policy, as `KubeClient.request` retries:
        429 (Retry-After), 5xx and lost connections with backoff, the rest raised."""
        policy = self.kube.retry
        last: ApiError | None = None
        for attempt in range(policy.attempts):
            if attempt:
                await asyncio.sleep(policy.delay(attempt - 1, last.retry_after if last else None))
            try:
                return await self.request(method, path, body, content_type=content_type,
                                          timeout=timeout)
            except ApiError as exc:
                if not transient(exc.status):
                    raise
                last = exc
        assert last is not None
        raise last

    async def _exchange(self, method: str, path: str, message: bytes, timeout: float
                        ) -> Response:
        """Sends on an idle connection (or a new one) and reads the answer. A reused
        connection the server closed while it idled (no answer, reset, TLS EOF) is replaced
        once, at once, as urllib3 does; a bind sent twice that way finds itself bound
        (409, verified against the node)."""
        for reuse in (bool(self.idle), False):
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(timeout):
                    reader, writer = self.idle.pop() if reuse else await self._open()
                    writer.write(message)
                    status, headers, data, keep = await _read_response(reader, method)
            except (OSError, EOFError, TimeoutError, ValueError, ssl.SSLError,
                    asyncio.LimitOverrunError) as exc:
                if writer is not None:
                    writer.close()
                if reuse and isinstance(exc, (_NoAnswer, ConnectionError, ssl.SSLError)):
                    continue
                self.kube.transient[0] += 1
                raise ApiUnavailable(method, path, exc) from None
            if keep:
                self.idle.append((reader, writer))
            else:
                writer.close()
            if 200 <= status < 300:
                return Response(status, data, headers)
            if status in RETRYABLE_STATUS:
                self.kube.transient[status] += 1
            raise _error_from(method, path, status, data, headers)
        raise AssertionError("unreachable: the second pass opens a new connection")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.opened += 1
        host, port = self.address
        return await asyncio.open_connection(
            host, port, ssl=self.tls, server_hostname=host if self.tls else None,
            limit=1 << 20)

    async def _warm(self, connections: int) -> None:
        """`connections` GETs at once: each holds a connection, so the idle ones are all
        used (the server's idle timer restarts) and the missing ones opened."""
        await asyncio.gather(*(self.request("GET", "/version") for _ in range(connections)))

    def warm(self, connections: int) -> None:
        """Opens up to `connections` connections ahead of a burst (TLS handshakes cost
        ~1.3 ms of CPU each with the RSA client certificates clusters hand out: 0.17 ms
        per bind of a cold 1,024-pod burst, more than the binds themselves)."""
        self.run(self._warm(connections))

    def keep_warm(self, connections: int, every_s: float = KEEP_WARM_S) -> None:
        """Keeps `connections` open from now on: the API server closes a connection
        idle for 90 s, and a gang arriving after a quiet spell should not pay the
        handshakes. One GET /version per connection per `every_s` (2 a second for 128),
        skipped while requests are in flight (those connections are alive anyway)."""
        if self.warmer is None:
            self.warmer = asyncio.run_coroutine_threadsafe(
                self._keep_warm(connections, every_s), self.loop)

    async def _keep_warm(self, connections: int, every_s: float) -> None:
        while True:
            if self.in_flight == 0:
                try:
                    await self._warm(connections)
                except ApiError as exc:  # the next round tries again
                    log.debug("keeping bind connections warm: %s", exc)
            await asyncio.sleep(every_s)

    def close(self) -> None:
        async def shut() -> None:
            if self.warmer is not None:
                self.warmer.cancel()
            for _, writer in self.idle:
                writer.close()
            self.idle.clear()
        self.run(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class _NoAnswer(EOFError):
    """The connection closed before any byte of the answer."""


def _tls_context(configuration: Any) -> ssl.SSLContext:
    """The TLS settings urllib3 gets from the same configuration."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _read_response(reader: asyncio.StreamReader, method: str
                         ) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers (lower-case names), body, and whether the connection stays open."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _NoAnswer("connection closed before an answer") from None
        raise
    lines = raw.decode("latin-1").split("\r\n")
    version, code, *_ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    status = int(code)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        data = b""
    elif "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            chunks.append((await reader.readexactly(size + 2))[:-2])
        data = b"".join(chunks)
    else:
        return status, headers, await reader.read(), False
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return status, headers, data, keep
