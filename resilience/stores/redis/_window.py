"""Sliding-window decisions of the Redis store: one Lua script per decision, Redis TIME clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from resilience.stores.base import (
    MERGE_FROM,
    MERGE_GRACE_US,
    WindowLimit,
    WindowResult,
    merge_slot_us,
)
from resilience.stores.redis._core import RedisCore, nonce
from resilience.stores.redis._keys import window_channel, window_keys
from resilience.stores.redis._pubsub import BreakerEvents

__all__ = ["RedisWindow"]

_KEY_CACHE_MAX = 10_000
_result = WindowResult._make  # tuple.__new__: cheaper than the NamedTuple's __new__


async def _shielded(aw: Awaitable[Any]) -> None:
    """Run ``aw`` to completion even if the caller is cancelled again; ignore its failure."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(_retrieve)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        pass  # ``task`` keeps running; the caller's cancellation is re-raised by our caller
    except Exception:
        pass  # best effort: a lost release wastes capacity until the window passes, no more


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class RedisWindow(RedisCore):
    """Exact sliding log with reservations (``lua/window_*.lua``).

    Owns a cache of the keys of each ``(limits, key)`` (``_wkeys``), and the channel on which
    settles announce freed units (``_wevents``).
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        #: The pub/sub channel of freed units (``window_settle.lua``): see window_subscribe.
        self.window_channel: str = window_channel(self.prefix)
        self._wevents = BreakerEvents(self.open_pubsub, self.window_channel)
        # (id(limits), key) -> (limits, their keys): see _window_keys.
        self._wkeys: dict[tuple[int, str], tuple[Sequence[WindowLimit], list[str]]] = {}

    def _window_keys(self, limits: Sequence[WindowLimit], key: str) -> list[str]:
        cache = self._wkeys
        # By the identity of `limits` (a policy passes the same tuple on every call), checked
        # against the cached object: cheaper than hashing the WindowLimit dataclasses.
        hit = cache.get((id(limits), key))
        if hit is not None and hit[0] is limits:
            return hit[1]
        if len(cache) >= _KEY_CACHE_MAX:
            cache.clear()
        keys: list[str] = []
        for lim in limits:
            keys.extend(window_keys(self.prefix, lim.name, key))
        cache[(id(limits), key)] = (limits, keys)
        return keys

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
        *,
        merge: bool = False,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`."""
        token = nonce()  # hex: [0-9a-f]
        if len(limits) == 1:
            lim = limits[0]
            args: tuple[int | str, ...] = (max_wait_us, token, lim.limit, lim.window_us, costs[0])
        else:
            args = (max_wait_us, token)
            for lim, cost in zip(limits, costs, strict=True):
                args += (lim.limit, lim.window_us, cost)
        if merge:
            slots = tuple(merge_slot_us(lim.limit, lim.window_us) for lim in limits)
            if any(slots):  # "m": a merging caller's reservation (see window_acquire.lua)
                token = "m" + token
                args = (args[0], token, *args[2:], *slots, MERGE_GRACE_US, MERGE_FROM)
        keys = self._window_keys(limits, key)
        try:
            r = await self._eval("window_acquire", keys, args)
        except asyncio.CancelledError:
            # The script may have run (and admitted or reserved) before the caller was
            # cancelled (`_eval` raises only after an in-flight script finished); the caller
            # will never use that entry: remove it, best effort. (A merged admission has no
            # entry of its own: its units stay counted for their window, never over-admitted;
            # see "Merging" in docs/ratelimit.md.)
            await _shielded(self._eval("window_release", keys, [token, *costs]))
            raise
        if type(r) is int:  # admitted now
            return _result((True, r, 0, token))
        allowed, remaining, wait = r.split()
        if allowed in (b"1", "1"):  # admitted into a reserved slot
            return _result((True, int(remaining), int(wait), token))
        return _result((False, int(remaining), int(wait), ""))  # refused: no entry, no token

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_release`."""
        await self._eval("window_release", self._window_keys(limits, key), [token, *costs])

    async def window_learn(
        self, limits: Sequence[WindowLimit], key: str, limit: int, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_learn`."""
        await self._eval("window_learn", self._window_keys(limits, key), [limit, duration_us])

    async def window_paused(self, limits: Sequence[WindowLimit], key: str) -> int:
        """See :meth:`resilience.stores.base.WindowOps.window_paused`."""
        return int(await self._eval("window_paused", self._window_keys(limits, key), []))

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_penalize`."""
        await self._eval("window_penalize", self._window_keys(limits, key), [duration_us])

    async def window_settle(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        token: str,
        costs: Sequence[int],
        actual: Sequence[int],
    ) -> bool:
        """See :meth:`resilience.stores.base.WindowOps.window_settle` (``window_settle.lua``)."""
        args: list[int | str] = [token]
        for lim, cost, new in zip(limits, costs, actual, strict=True):
            args += (lim.window_us, cost, new)
        args.append(self.window_channel)
        done = await self._eval("window_settle", self._window_keys(limits, key), args)
        return bool(int(done))

    def window_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.WindowEvents.window_tag`."""
        return window_keys(self.prefix, name, key)[0]

    def window_subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.WindowEvents.window_subscribe`: one background
        subscription per store and event loop (started by the first subscriber, stopped by
        the last one or :meth:`aclose`)."""
        return self._wevents.subscribe(callback)

    async def aclose(self) -> None:
        """Stop the window-event subscriptions, then close as the other parts do."""
        await self._wevents.stop()
        await super().aclose()

    async def window_advance(
        self, limits: Sequence[WindowLimit], key: str, token: str, costs: Sequence[int]
    ) -> int:
        """See :meth:`resilience.stores.base.WindowOps.window_advance` (``window_advance.lua``)."""
        args: list[int | str] = [token]
        for lim, cost in zip(limits, costs, strict=True):
            args += (lim.limit, lim.window_us, cost)
        return int(await self._eval("window_advance", self._window_keys(limits, key), args))
