"""A free loopback port, for the local processes this project starts (API servers'
neighbours, schedulers' HTTP servers, webhooks, proxies)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now. The socket is closed before the caller binds, so
    another process could take it in between: callers start their listener at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
