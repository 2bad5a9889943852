"""A TCP proxy on loopback that delays every chunk it forwards: a slow Redis (or network).

Reusable by tests and benchmarks::

    with LatencyProxy.running(server.port, delay=0.15) as proxy:   # its own thread and loop
        store = RedisStore.from_url(proxy.url)
        ...
        proxy.delay = 0.0                                         # changed at run time

or, inside a running event loop (the proxy then shares that loop with the code under test)::

    async with LatencyProxy(server.port, delay=0.15) as proxy:
        ...

Each chunk read from one side is written to the other ``delay`` seconds (client to server) or
``reply_delay`` seconds (server to client) after it was read, in order. The delay is latency,
not a bandwidth limit: chunks read close together leave close together, so a connection with
many commands in flight is not serialized. A change of ``delay`` applies to chunks read after
it. Closing either side closes the other once the chunks already read have been forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from types import TracebackType

__all__ = ["LatencyProxy"]

_CHUNK = 1 << 16


class LatencyProxy:
    """A delaying TCP proxy on ``127.0.0.1`` in front of ``target_host:target_port``.

    Args:
        target_port: the port to forward to (e.g. a throwaway redis-server's).
        delay: seconds added to every chunk sent from a client to the target.
        reply_delay: seconds added to every chunk sent from the target to a client.
        target_host: the host to forward to.

    Attributes:
        delay, reply_delay: may be changed at any time, from any thread.
        port: the proxy's own port once started (``url``: ``redis://127.0.0.1:port/0``).
        connections: connections accepted so far.
    """

    def __init__(
        self,
        target_port: int,
        *,
        delay: float = 0.0,
        reply_delay: float = 0.0,
        target_host: str = "127.0.0.1",
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.reply_delay = reply_delay
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> LatencyProxy:
        """Listen on a free loopback port (in the running loop)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        """Stop listening and close every proxied connection."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LatencyProxy:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        target_port: int,
        *,
        delay: float = 0.0,
        reply_delay: float = 0.0,
        target_host: str = "127.0.0.1",
    ) -> Iterator[LatencyProxy]:
        """Run a proxy on an event loop of its own, in a daemon thread, for the ``with`` block
        (so the proxy's own work never delays the loop under test)."""
        proxy = cls(target_port, delay=delay, reply_delay=reply_delay, target_host=target_host)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(proxy.start())
            except BaseException as exc:  # pragma: no cover - reported below
                failed.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        thread.start()
        started.wait(10)
        if failed or not proxy.port:
            raise RuntimeError(f"latency proxy did not start: {failed!r}")
        try:
            yield proxy
        finally:
            asyncio.run_coroutine_threadsafe(proxy.aclose(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # ------------------------------------------------------------------ forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, "delay")),
            asyncio.ensure_future(self._pump(up_reader, writer, "reply_delay")),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, which: str
    ) -> None:
        """Forward ``reader`` to ``writer``, each chunk held until its read time + delay."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(_CHUNK)
                due = time.monotonic() + float(getattr(self, which))
                await queue.put((due, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender

    @staticmethod
    async def _send(
        queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
