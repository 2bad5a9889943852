"""A cancellation is never lost in a Redis store call.

redis-py 8 swallows a ``cancel()`` that lands as the reply arrives (about a third of the
cancellations racing a reply, measured on Python 3.10 and 3.11) and returns the reply instead.
Through a store, the caller must see ``CancelledError`` every time its ``cancel()`` took effect,
and whatever the script granted must be given back.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from resilience import RedisStore, SlidingWindowLimiter
from resilience.stores.keys import window_keys


async def test_every_effective_cancel_raises_and_leaks_nothing(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    lim = SlidingWindowLimiter(10**6, 60.0, store=redis_store, name="cancel", guard=0)
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
