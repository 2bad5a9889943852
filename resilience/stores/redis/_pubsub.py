"""Breaker transitions pushed over Redis pub/sub (``PUBLISH`` in ``lua/breaker_*.lua``).

Each Redis store owns one :class:`BreakerEvents`, which holds one :class:`Subscription` per
event loop. A subscription is a background task that holds a ``SUBSCRIBE`` to the store's
channel (:func:`resilience.stores.redis._keys.breaker_channel`) on a connection of its own
(:meth:`RedisCore.open_pubsub <resilience.stores.redis._core.RedisCore.open_pubsub>`: never
one of the store's, which ``max_concurrency`` sizes for commands), and hands every message to
the registered callbacks. It starts with the first subscriber, stops with the last one or with
:meth:`resilience.RedisStore.aclose`, and never raises into callers: when Redis goes away it
reconnects with jittered exponential backoff (50 ms doubling to 2 s), and each time the
subscription is (re)established it sends ``""`` to every callback (messages may have been
lost meanwhile). A callback registered while the subscription is already up gets its own
``""`` (soon, on the loop): so each callback's first ``""`` marks the start of its
subscription, and every later one a re-establishment (Redis may have restarted).

On Redis Cluster a classic ``PUBLISH`` reaches every node, so the task subscribes on one
primary (another one after a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from resilience.stores.base import BreakerEventCallback
from resilience.stores.redis._core import as_str

__all__ = ["BreakerEvents", "Subscription"]

#: Opens a PubSub on a connection pool of its own (``RedisCore.open_pubsub``).
OpenPubSub = Callable[[], Awaitable[tuple[PubSub, aioredis.ConnectionPool]]]

logger = logging.getLogger("resilience")

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
# A blocking read is polled: redis-py's PubSub read can swallow a cancellation (the task then
# waits on the socket again), so the task also checks a stop flag this often.
POLL = 0.25


class Subscription:
    """The subscription of one store on one event loop (see the module docs)."""

    def __init__(
        self, open_pubsub: OpenPubSub, channel: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._open_pubsub = open_pubsub
        self.channel = channel
        self.loop = loop
        self.callbacks: dict[int, BreakerEventCallback] = {}
        self.connected = False
        self._stop: list[bool] = [True]  # the running task's stop flag
        self._ids = 0
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: BreakerEventCallback) -> Callable[[], None]:
        self._ids += 1
        cid = self._ids
        self.callbacks[cid] = callback
        if self._task is None or self._task.done():
            self._stop = [False]
            self._task = self.loop.create_task(
                self._run(self._stop), name=f"resilience:{self.channel}"
            )
        elif self.connected:
            self.loop.call_soon(self._established, cid)

        def unsubscribe() -> None:
            if self.callbacks.pop(cid, None) is not None and not self.callbacks:
                self.cancel()

        return unsubscribe

    def _established(self, cid: int) -> None:
        """Tell a callback that joined a running subscription that it is established."""
        cb = self.callbacks.get(cid)
        if cb is not None:
            try:
                cb("")
            except Exception:
                logger.exception("breaker event callback %r failed", cb)

    def cancel(self) -> None:
        self._stop[0] = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            if self.loop.is_closed():
                return
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self.loop:
                task.cancel()
            else:
                self.loop.call_soon_threadsafe(task.cancel)

    async def stop(self) -> None:
        """Cancel the task and wait for it (it closes its connection on the way out)."""
        task = self._task
        self.callbacks.clear()
        self.cancel()
        if task is not None and asyncio.get_running_loop() is self.loop:
            await asyncio.wait({task}, timeout=2 * POLL + 2.0)

    # ------------------------------------------------------------------ the task

    def _dispatch(self, message: str) -> None:
        for cb in tuple(self.callbacks.values()):
            try:
                cb(message)
            except Exception:
                logger.exception("breaker event callback %r failed", cb)

    async def _run(self, stop: list[bool]) -> None:
        delay = BACKOFF_MIN
        task = asyncio.current_task()
        # Python 3.11+: a cancellation redis-py swallowed is still counted (asyncio.run's
        # shutdown cancels this task without setting the stop flag).
        cancelling: Callable[[], int] = getattr(task, "cancelling", lambda: 0)
        while not stop[0]:
            ps: PubSub | None = None
            pool: aioredis.ConnectionPool | None = None
            try:
                ps, pool = await self._open_pubsub()
                await ps.subscribe(self.channel)
                while not stop[0]:
                    if cancelling():
                        raise asyncio.CancelledError
                    msg = await ps.get_message(timeout=POLL)
                    if msg is None:
                        continue
                    kind = as_str(msg.get("type"))
                    if kind == "message":
                        self._dispatch(as_str(msg["data"]))
                    elif kind == "subscribe":
                        # (Re)established, here or by redis-py's own reconnect: anything
                        # published meanwhile was lost.
                        self.connected = True
                        delay = BACKOFF_MIN
                        self._dispatch("")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never raise into callers: retry
                if self.connected:
                    logger.warning(
                        "breaker events: subscription to %s lost (%s: %s); reconnecting",
                        self.channel,
                        type(exc).__name__,
                        exc,
                    )
                else:
                    logger.debug("breaker events: subscribe failed", exc_info=True)
            finally:
                self.connected = False
                await _close(ps, pool)
            if stop[0] or cancelling():
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_MAX)


async def _close(ps: PubSub | None, pool: aioredis.ConnectionPool | None) -> None:
    # Bounded and shielded from nothing: this runs on the way out of a cancelled task too.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        if ps is not None:
            await asyncio.wait_for(ps.aclose(), 1.0)  # type: ignore[no-untyped-call,unused-ignore]
    with contextlib.suppress(Exception, asyncio.CancelledError):
        if pool is not None:
            await asyncio.wait_for(pool.disconnect(), 1.0)


class BreakerEvents:
    """A store's breaker-event subscriptions: one :class:`Subscription` per event loop,
    created by the first subscriber on that loop (owned by the store, one per store).

    Args:
        open_pubsub: opens a PubSub on a connection pool of its own (the store's
            :meth:`~resilience.stores.redis._core.RedisCore.open_pubsub`).
        channel: the store's breaker-events channel.
    """

    __slots__ = ("_per_loop", "channel", "open_pubsub")

    def __init__(self, open_pubsub: OpenPubSub, channel: str) -> None:
        self.open_pubsub = open_pubsub
        self.channel = channel
        self._per_loop: dict[asyncio.AbstractEventLoop, Subscription] = {}

    @property
    def connected(self) -> bool:
        """Whether a subscription of this store is up, on any event loop."""
        return any(sub.connected for sub in self._per_loop.values())

    def subscribe(self, callback: BreakerEventCallback) -> Callable[[], None]:
        """Register ``callback`` on the running loop's subscription; return its unsubscribe."""
        loop = asyncio.get_running_loop()
        per_loop = self._per_loop
        sub = per_loop.get(loop)
        if sub is None:
            for old in [lp for lp in per_loop if lp.is_closed()]:
                del per_loop[old]
            sub = per_loop[loop] = Subscription(self.open_pubsub, self.channel, loop)
        return sub.subscribe(callback)

    async def stop(self) -> None:
        """Stop every subscription task (awaiting the one on the running loop)."""
        per_loop, self._per_loop = self._per_loop, {}
        for sub in per_loop.values():
            await sub.stop()
