"""The concurrency limit on a real redis-server, across processes: the limit holds fleet-wide,
a killed holder's permits come back within one lease, a killed waiter at the head of the
queue does not block the others."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import pytest
import redis.asyncio as aioredis

from resilience import ConcurrencyLimit, ConcurrencyLimited, RedisStore
from resilience.stores.redis._keys import concurrency_keys
from tests import concurrency_workers
from tests.redis_servers import RedisServer

SPAWN = multiprocessing.get_context("spawn")


@pytest.mark.slow
async def test_four_processes_never_run_more_than_the_limit(
    redis_server: RedisServer, redis_client: aioredis.Redis, prefix: str
) -> None:
    limit, seconds = 5, 3.0
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=concurrency_workers.hammer,
            args=(redis_server.url, prefix, limit, seconds, 6, out),
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    calls = sum(c for c, _ in results)
    peak = int(await redis_client.get(f"{prefix}:{concurrency_workers.PEAK}") or 0)
    # 24 tasks want in at once: the fleet ran exactly `limit` calls at its peak, never more.
    assert peak == limit, (peak, results)
    assert calls > 50
    # Nothing leaked: no holder and no waiter is left in the store.
    h, q, e, _ = concurrency_keys(prefix, "hammer", "")
    assert await redis_client.zcard(h) == 0
    assert await redis_client.zcard(q) == 0
    assert await redis_client.zcard(e) == 0


async def test_a_killed_holders_permits_come_back_within_one_lease(
    redis_server: RedisServer, redis_client: aioredis.Redis, prefix: str
) -> None:
    lease, limit = 1.0, 3
    ready = SPAWN.Queue()
    proc = SPAWN.Process(
        target=concurrency_workers.hold,
        args=(redis_server.url, prefix, limit, limit, lease, ready),
    )
    proc.start()
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    try:
        assert ready.get(timeout=30) == "held"
        lim = ConcurrencyLimit(limit, store=store, name="held", lease=lease)
        with pytest.raises(ConcurrencyLimited):
            async with lim.acquire(timeout=0):
                pass
        # Held past several leases: the holder renews.
        await asyncio.sleep(2.5 * lease)
        with pytest.raises(ConcurrencyLimited):
            async with lim.acquire(timeout=0):
                pass
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        async with lim.acquire(timeout=5), lim.acquire(timeout=5), lim.acquire(timeout=5):
            waited = time.monotonic() - t0
        # Back within one lease (plus the scheduling of a loaded machine).
        assert waited <= lease + 0.5, waited
    finally:
        proc.join(10)
        await store.aclose()


async def test_a_killed_waiter_at_the_head_does_not_block_the_queue(
    redis_server: RedisServer, redis_client: aioredis.Redis, prefix: str
) -> None:
    lease = 1.0
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    lim = ConcurrencyLimit(1, store=store, name="held", lease=lease)
    ready = SPAWN.Queue()
    proc = SPAWN.Process(
        target=concurrency_workers.wait_in_queue, args=(redis_server.url, prefix, lease, ready)
    )
    try:
        async with lim.acquire():
            proc.start()
            head = ready.get(timeout=30)
            _, q, _, _ = concurrency_keys(prefix, "held", "")
            queue = [m.decode() for m in await redis_client.zrange(q, 0, -1)]  # type: ignore[union-attr]
            assert queue[0] == head  # the killed process's waiter is at the head
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            mine = asyncio.ensure_future(lim.acquire(timeout=10).__aenter__())
            await asyncio.sleep(0.2)
            assert not mine.done()
        # The permit is free, but the dead waiters ahead of `mine` hold their places until
        # their leases end: `mine` gets it within one lease of the kill.
        t0 = time.monotonic()
        permit = await mine
        assert time.monotonic() - t0 <= lease + 0.5
        await permit.__aexit__(None, None, None)
    finally:
        if proc.is_alive():
            proc.kill()
        await store.aclose()
