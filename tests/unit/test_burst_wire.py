"""The burst client's HTTP/1.1 framing: what it writes and how it reads the answers the
Go HTTP server sends (Content-Length, chunked, Connection: close, closed before an
answer). Bytes in, parsed answer out; the live exchange is tests/integration/test_binder."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client

from kube.client import KubeClient, _NoAnswer, _read_response
from scheduler.binder import binding_body


def read(raw: bytes, method: str = "POST") -> tuple[int, dict[str, str], bytes, bool]:
    async def go() -> tuple[int, dict[str, str], bytes, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await _read_response(reader, method)
    return asyncio.run(go())


def test_content_length_answer_keeps_the_connection() -> None:
    status, headers, body, keep = read(
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        b"Content-Length: 17\r\n\r\n{\"kind\":\"Status\"}")
    assert (status, body, keep) == (201, b'{"kind":"Status"}', True)
    assert headers["content-type"] == "application/json"


def test_chunked_answer_is_joined() -> None:
    status, _, body, keep = read(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n")
    assert (status, body, keep) == (200, b'{"a":1}', True)


def test_retry_after_and_connection_close() -> None:
    status, headers, _, keep = read(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\n"
        b"Content-Length: 2\r\n\r\n{}")
    assert status == 429 and headers["retry-after"] == "1" and not keep


def test_closed_before_any_answer_is_told_apart() -> None:
    with pytest.raises(_NoAnswer):
        read(b"")
    with pytest.raises(asyncio.IncompleteReadError) as partial:
        read(b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\n{}")
    assert not isinstance(partial.value, _NoAnswer)


def test_request_head_carries_credentials_and_length() -> None:
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.api_key = {"authorization": "token-abc"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    kube = KubeClient(configuration)
    try:
        burst = kube.burst()
        body = binding_body("ns", "p-0", "node-1")
        head = burst.head("POST", "/api/v1/namespaces/ns/pods/p-0/binding",
                          "application/json", len(body)).decode()
        lines = head.split("\r\n")
        assert lines[0] == "POST /api/v1/namespaces/ns/pods/p-0/binding HTTP/1.1"
        assert "Host: 127.0.0.1:6443" in lines
        assert "authorization: Bearer token-abc" in [line for line in lines if line]
        assert f"Content-Length: {len(body)}" in lines
        assert head.endswith("\r\n\r\n")
        get = burst.head("GET", "/version", None, 0).decode()
        assert "Content-Length" not in get and "Content-Type" not in get
    finally:
        kube.close()
