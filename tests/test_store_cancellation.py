"""A cancellation is never lost in a Redis store call.

redis-py 8 swallows a ``cancel()`` that lands as the reply arrives (about a third of the
cancellations racing a reply, measured on Python 3.10 and 3.11) and returns the reply instead.
Through a store, the caller must see ``CancelledError`` every time its ``cancel()`` took effect,
and whatever the script granted must be given back.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores.base import MERGE_ABOVE
from resilience.stores.redis._keys import window_keys
from tests.latency_proxy import LatencyProxy
from tests.redis_servers import RedisServer


async def test_every_effective_cancel_raises_and_leaks_nothing(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    # (MERGE_ABOVE: an entry per admission, the release of which is exact; see
    # test_limiter_cancellation.py for merged admissions.)
    lim = SlidingWindowLimiter(MERGE_ABOVE, 60.0, store=redis_store, name="cancel", guard=0)
    await lim.try_acquire()  # connections and scripts warm
    lost = admitted = 0
    for n in range(300):
        t = asyncio.create_task(lim.try_acquire())
        for _ in range(n % 8):  # cancel at every stage: before sending, in flight, replying
            await asyncio.sleep(0)
        took = t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            continue
        admitted += 1
        if took:
            lost += 1
    assert lost == 0
    # Only the warm-up and the calls that finished before their cancel hold an entry: the
    # cancelled ones were released after their script ran.
    await asyncio.sleep(0.2)  # the shielded releases finish
    z = window_keys(redis_store.prefix, "cancel", "")[0]
    assert await redis_client.zcard(z) == 1 + admitted


async def test_cancelled_while_queueing_for_a_connection(
    redis_server: RedisServer, prefix: str, redis_client: aioredis.Redis
) -> None:
    """Callers queued for one of the store's 2 connections (a slow Redis), cancelled from
    outside at every stage or timed out by the store: none is lost, no slot or entry leaks."""
    with LatencyProxy.running(redis_server.port) as proxy:
        store = RedisStore.from_url(proxy.url, prefix=prefix, timeout=0.3, max_connections=2)
        lim = SlidingWindowLimiter(
            MERGE_ABOVE, 60.0, store=store, name="q", guard=0, fallback="deny"
        )
        await asyncio.gather(*(lim.try_acquire() for _ in range(2)))  # connections warm
        proxy.delay = 0.03
        tasks = [asyncio.create_task(lim.try_acquire()) for _ in range(40)]
        for i, t in enumerate(tasks):
            if i % 2:
                await asyncio.sleep(0.005)
                t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        proxy.delay = 0.0
        gate = store._gate
        assert gate is not None
        assert gate.free == gate.slots
        assert not gate._waiters
        admitted = sum(1 for r in results if not isinstance(r, BaseException))
        for r in results:
            assert not isinstance(r, BaseException) or isinstance(
                r, (asyncio.CancelledError, StoreUnavailable)
            ), r
        await asyncio.sleep(0.2)  # the shielded releases finish
        z = window_keys(prefix, "q", "")[0]
        # An entry per admitted call (and the warm-up), at most: cancelled or timed-out calls
        # whose script ran anyway are released or, timed out in flight, may keep theirs.
        assert 2 + admitted <= await redis_client.zcard(z) <= 2 + 40
        await store.aclose()
