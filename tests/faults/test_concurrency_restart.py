"""The concurrency limit through a Redis that goes down and comes back empty.

While it is down, ``fallback="local"`` admits this process's fair share less the permits it
still holds from Redis (their calls run on); when it comes back empty, the running calls'
renewals hold their permits again within a third of a lease, and nothing leaks once every
call has ended.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from resilience import ConcurrencyLimit, ConcurrencyLimited, RedisStore, StoreUnavailable
from resilience.stores.redis._keys import concurrency_keys
from tests.eventually import eventually
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

LEASE = 0.9


async def _until_up(store: RedisStore, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    spec = ConcurrencyLimit(1, store=store, name="warm-up")._spec
    while True:
        try:
            await store.concurrency_release(spec, "", "x")
            return
        except StoreUnavailable:
            pass
        assert time.monotonic() < deadline, "the restarted server never answered"
        await asyncio.sleep(0.05)


async def test_permits_survive_a_restart_and_nothing_leaks(
    fresh_redis_server: RedisServer,
) -> None:
    server = fresh_redis_server
    store = RedisStore.from_url(server.url, prefix="cc", timeout=0.3)
    side = aioredis.Redis.from_url(server.url)
    lim = ConcurrencyLimit(2, store=store, name="restart", lease=LEASE)
    holders, _, _, _ = concurrency_keys("cc", "restart", "")
    release = asyncio.Event()

    async def long_call() -> None:
        async with lim.acquire():
            await release.wait()

    calls = [asyncio.ensure_future(long_call()) for _ in range(2)]
    try:

        async def both_held() -> bool:
            return int(await side.zcard(holders)) == 2

        await eventually(both_held, what="both calls hold a permit")
        server.kill()
        # Down: the local share (2, alone) less the 2 permits still held: nothing more runs.
        with pytest.raises(ConcurrencyLimited):
            async with lim.acquire(timeout=0):
                pass
        server.restart()
        await side.aclose()
        side = aioredis.Redis.from_url(server.url)
        await _until_up(store)
        # The server came back empty (no persistence); the running calls' renewals hold their
        # permits again within a third of a lease (one may already have, on a slow machine).
        await asyncio.sleep(LEASE / 3 + 0.3)
        assert await side.zcard(holders) == 2
        with pytest.raises(ConcurrencyLimited):
            async with lim.acquire(timeout=0):
                pass
        release.set()
        await asyncio.wait_for(asyncio.gather(*calls), 5)
        # Nothing leaked: both permits are free at once, and the store holds none.
        assert await side.zcard(holders) == 0
        async with lim.acquire(timeout=0), lim.acquire(timeout=0):
            pass
    finally:
        release.set()
        for c in calls:
            c.cancel()
        await side.aclose()
        await store.aclose()


async def test_waiters_keep_waiting_through_a_restart(fresh_redis_server: RedisServer) -> None:
    server = fresh_redis_server
    store = RedisStore.from_url(server.url, prefix="cw", timeout=0.3)
    lim = ConcurrencyLimit(1, store=store, name="w", lease=LEASE, fallback="deny")
    try:
        async with lim.acquire():
            waiter = asyncio.ensure_future(lim.acquire(timeout=8).__aenter__())
            await asyncio.sleep(0.2)
            server.kill()
            await asyncio.sleep(LEASE / 3 + 0.3)  # the waiter asks a down store: it waits on
            assert not waiter.done()
            server.restart()
            await _until_up(store)
            await asyncio.sleep(0.3)
        # The holder released into the restarted store; the waiter's ticket was forgotten
        # with the restart, and its next re-check (at most a third of a lease) queues it
        # again and takes the permit.
        permit = await asyncio.wait_for(waiter, 5)
        await permit.__aexit__(None, None, None)
    finally:
        await store.aclose()
