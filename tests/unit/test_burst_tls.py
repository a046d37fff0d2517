"""What a burst connection costs in memory: asyncio's TLS protocol allocates its read
buffer per connection, 256 KiB unless told otherwise, and a binder keeps up to
2 x binder.concurrency connections open."""

from __future__ import annotations

import asyncio
import ssl
import threading
import tracemalloc
from collections.abc import Iterator

import pytest
from kubernetes import client

from kube.client import TLS_READ_BUFFER, KubeClient
from scheduler.api.tls import self_signed

CONNECTIONS = 32


@pytest.fixture
def https_port() -> Iterator[int]:
    """An HTTPS server on loopback answering every request with a small JSON body."""
    pair = self_signed()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert_file, pair.key_file)
    loop = asyncio.new_event_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_server(answer, "127.0.0.1", 0, ssl=context), loop).result(10)
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)


def test_a_burst_connection_reads_into_one_tls_record_not_256_kib(https_port: int) -> None:
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{https_port}"
    configuration.verify_ssl = False
    kube = KubeClient(configuration, pool_size=CONNECTIONS)
    burst = kube.burst()
    tracemalloc.start()
    try:
        burst.warm(CONNECTIONS)  # opens them all: one GET each at once
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        kube.close()
    assert burst.opened == CONNECTIONS
    # Both ends live in this process (two TLS protocols per connection); with asyncio's
    # default each pair held 512 KiB of read buffers alone.
    assert grown / CONNECTIONS < 4 * TLS_READ_BUFFER + 64 * 1024
