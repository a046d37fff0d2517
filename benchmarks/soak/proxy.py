"""A pausable TCP proxy on loopback: the scheduler's only road to the API server.

Each `phalanx run` replica gets its own proxy and a kubeconfig whose server is the
proxy's port (TLS passes through untouched: the proxy sees bytes, not HTTP). Pausing it
is a network partition as the scheduler experiences one: open connections stop carrying
bytes in either direction (nothing is closed, so no RST tells the client anything) and
new connections are accepted but not forwarded. Resuming lets the held bytes flow again;
whatever the client gave up on in the meantime it has closed itself.

The proxy runs an asyncio loop in a daemon thread so the soak's own loop stays simple.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class PausableProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>; `pause()` / `resume()` from any thread."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._open = threading.Event()
        self._open.set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="soak-proxy", daemon=True)
        self._gate: asyncio.Event | None = None
        self.connections = 0

    def start(self) -> PausableProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start listening within 10 s")
        return self

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self) -> None:
        self._open.clear()
        self._loop.call_soon_threadsafe(self._set_gate, False)

    def resume(self) -> None:
        self._open.set()
        self._loop.call_soon_threadsafe(self._set_gate, True)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._shut)
        self._thread.join(5)

    def _shut(self) -> None:
        """Cancels every connection's task (held or flowing), then stops the loop."""
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.call_soon(self._loop.stop)

    def _set_gate(self, value: bool) -> None:
        assert self._gate is not None
        if value:
            self._gate.set()
        else:
            self._gate.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            pending = asyncio.all_tasks(self._loop)
            if pending:  # let the cancelled tasks finish unwinding before closing
                self._loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        assert self._gate is not None
        self.connections += 1
        try:
            await self._gate.wait()  # a new connection during a partition hangs here
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # cancelled at stop()
            await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies until EOF; while paused, held chunks wait at the gate (bytes neither lost
        nor delivered: a black hole until the partition heals)."""
        assert self._gate is not None
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                await self._gate.wait()
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
