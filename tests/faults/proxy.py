"""A TCP proxy on loopback whose behaviour a test switches while clients use it: the network faults of the suite.

``FaultProxy(upstream_port).start()`` listens on a free port of 127.0.0.1 and forwards every connection to
``127.0.0.1:upstream_port``. :meth:`FaultProxy.set_mode` switches what it does:

- ``pass``: forwards both ways;
- ``blackhole``: accepts and reads, never forwards nor answers (a server that hangs, a dropped route); connections
  already open stop being served too;
- ``refuse``: closes the listening socket (connection refused) and every open connection.

It runs an asyncio loop in a daemon thread of the test process; :meth:`stop` closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

from airflow_mlops.processes import free_port

Mode = Literal["pass", "blackhole", "refuse"]


class FaultProxy:
    """See the module doc."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.mode: Mode = "pass"
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"fault-proxy-{self.port}")

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def set_mode(self, mode: Mode) -> None:
        """Switch behaviour now (returns once the switch is done)."""
        self._call(self._switch(mode))

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._call(self._switch("refuse"))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _switch(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if mode in ("blackhole", "refuse"):
            for writer in list(self._writers):  # open connections stop being served
                if mode == "refuse":
                    writer.close()
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if mode != "refuse" and previous == "refuse" and self._server is None:
            await self._listen()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.mode == "blackhole":
                await self._swallow(reader)
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.mode == "blackhole":  # from now on nothing gets through, either way
                await self._swallow(reader)
                return
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
