"""Concurrency-limit decisions of the Redis store: ``lua/concurrency_*.lua``, on Redis ``TIME``.

Three scripts over four keys sharing one hash tag
(:func:`resilience.stores.redis._keys.concurrency_keys`): ``concurrency_acquire`` (a permit,
a place in the FIFO queue, or a refusal), ``concurrency_renew`` (a holder's lease) and
``concurrency_release``. Nobody blocks in Redis (no ``BLPOP``: the store's per-call timeout
rules it out): when a permit frees, the script ``PUBLISH``-es the tickets of the waiters
whose turn it is on the store's concurrency channel, which
:meth:`RedisConcurrency.concurrency_subscribe` follows with the same machinery as the
breaker's transitions (:mod:`resilience.stores.redis._pubsub`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from resilience.stores.base import ConcurrencyEventCallback, ConcurrencyReply, ConcurrencySpec
from resilience.stores.redis._core import RedisCore, as_str, nonce
from resilience.stores.redis._keys import concurrency_channel, concurrency_keys, concurrency_tag
from resilience.stores.redis._pubsub import BreakerEvents

__all__ = ["RedisConcurrency"]

_KEY_CACHE_MAX = 10_000


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class RedisConcurrency(RedisCore):
    """Holders, queue and waiter leases of each concurrency limit in Redis.

    Owns the channel of "your turn" messages, its subscriptions (``_cevents``) and a cache of
    each limit's keys (``_ckeys``).
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        #: The pub/sub channel on which waiters are told it is their turn.
        self.concurrency_channel: str = concurrency_channel(self.prefix)
        self._cevents = BreakerEvents(self.open_pubsub, self.concurrency_channel)
        self._ckeys: dict[tuple[str, str], list[str]] = {}

    def _concurrency_keys(self, name: str, key: str) -> list[str]:
        keys = self._ckeys.get((name, key))
        if keys is None:
            if len(self._ckeys) >= _KEY_CACHE_MAX:
                self._ckeys.clear()
            keys = self._ckeys[(name, key)] = list(concurrency_keys(self.prefix, name, key))
        return keys

    def concurrency_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_tag`."""
        return concurrency_tag(name, key)

    def concurrency_subscribe(self, callback: ConcurrencyEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_subscribe`: one
        background subscription per store and event loop (started by the first subscriber,
        stopped by the last one or :meth:`aclose`)."""
        return self._cevents.subscribe(callback)

    async def aclose(self) -> None:
        """Stop the concurrency-event subscriptions, then close as the other parts do."""
        await self._cevents.stop()
        await super().aclose()

    async def concurrency_acquire(
        self, spec: ConcurrencySpec, key: str, ticket: str, queue: bool
    ) -> ConcurrencyReply:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_acquire`."""
        fresh = not ticket
        if fresh:
            ticket = nonce()
        keys = self._concurrency_keys(spec.name, key)
        args = [
            spec.max_in_flight,
            spec.lease_us,
            ticket,
            "1" if queue else "0",
            self.concurrency_channel,
            concurrency_tag(spec.name, key),
        ]
        try:
            r = await self._eval("concurrency_acquire", keys, args)
        except asyncio.CancelledError:
            if fresh:
                # The script may have granted or queued the new ticket before the caller was
                # cancelled: nobody will ever use it, give it back (shielded, best effort).
                await _shielded_release(self, spec, key, ticket)
            raise
        return ConcurrencyReply(bool(int(r[0])), as_str(r[1]), int(r[2]), int(r[3]), int(r[4]))

    async def concurrency_renew(self, spec: ConcurrencySpec, key: str, token: str) -> bool:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_renew`."""
        keys = self._concurrency_keys(spec.name, key)
        r = await self._eval("concurrency_renew", keys[:1], [spec.lease_us, token])
        return bool(int(r))

    async def concurrency_release(self, spec: ConcurrencySpec, key: str, token: str) -> None:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_release`."""
        keys = self._concurrency_keys(spec.name, key)
        args = [
            spec.max_in_flight,
            token,
            self.concurrency_channel,
            concurrency_tag(spec.name, key),
        ]
        await self._eval("concurrency_release", keys[:3], args)


async def _shielded_release(
    store: RedisConcurrency, spec: ConcurrencySpec, key: str, token: str
) -> None:
    task = asyncio.ensure_future(store.concurrency_release(spec, key, token))
    task.add_done_callback(_retrieve)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        pass  # cancelled again: the release goes on in the background
    except Exception:
        pass  # best effort: the entry's lease expires anyway
