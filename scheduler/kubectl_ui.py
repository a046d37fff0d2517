"""`kubectl phalanx ui`: the topology map page on a loopback port, each request forwarded
to the scheduler as the user (see kubectl_plugin: a browser cannot add the token header
the service proxy path needs).

Only the page's own routes are forwarded (`/ui`, `/ui/content`), only GET, and only on
a loopback address: the port acts with the user's credentials."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import orjson

from kube import ApiError, Response

PAGE_ROUTES = frozenset({"/ui", "/ui/content"})
Forward = Callable[[str, dict[str, str] | None], Response]


def loopback(address: str) -> tuple[str, int]:
    """HOST:PORT, refused (ValueError naming it) unless HOST is a loopback address."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    host = "127.0.0.1" if host in ("", "localhost") else host
    try:
        if not ipaddress.ip_address(host).is_loopback or not 0 <= int(port) < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(f"--address: expected a loopback HOST:PORT such as 127.0.0.1:8271, "
                         f"got {address!r} (the page is served with your credentials)"
                         ) from None
    return host, int(port)


def handler(forward: Forward) -> type[BaseHTTPRequestHandler]:
    class PageProxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            route = "/ui" if url.path in ("/", "") else url.path
            if route not in PAGE_ROUTES:
                return self._send(404, "application/json", orjson.dumps(
                    {"detail": f"only {sorted(PAGE_ROUTES)} are served here"}))
            query = dict(parse_qsl(url.query)) or None
            try:
                reply = forward(route, query)
            except ApiError as exc:  # ApiUnavailable (status 0): the API server is away
                return self._send(exc.status or 502, "application/json",
                                  orjson.dumps({"detail": exc.message}))
            self._send(reply.status, reply.headers.get("content-type", "text/html"),
                       reply.data)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the page refreshes every few seconds."""

    return PageProxy


def serve_page(forward: Forward, address: str) -> int:
    try:
        host, port = loopback(address)
    except ValueError as exc:
        print(f"kubectl phalanx: {exc}", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer((host, port), handler(forward))
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving the Phalanx topology map at http://{shown}:{server.server_address[1]}/ui "
          f"(Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
