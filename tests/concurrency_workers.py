"""Worker-process bodies for the concurrency limit's multi-process tests (spawned, so
importable). Each builds its own :class:`resilience.RedisStore` and reports through a queue
or its exit code; every loop is bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import redis.asyncio as aioredis

from resilience import ConcurrencyLimit, ConcurrencyLimited, RedisStore

#: The counter of calls running inside the limit (INCR on entry, DECR on exit), fleet-wide.
RUNNING = "cc-observed:running"
#: The highest value of RUNNING any call saw on entry.
PEAK = "cc-observed:peak"


def hammer(url: str, prefix: str, limit: int, seconds: float, tasks: int, out: Any) -> None:
    """``tasks`` tasks call through a ConcurrencyLimit of ``limit`` for ``seconds``, each call
    counted in RUNNING / PEAK on the same Redis; report (calls, limited)."""

    async def main() -> tuple[int, int]:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        side = aioredis.Redis.from_url(url)
        lim = ConcurrencyLimit(limit, store=store, name="hammer", lease=2.0, timeout=2.0)
        stop = time.monotonic() + seconds
        calls = limited = 0

        @lim
        async def call() -> None:
            running = await side.incr(f"{prefix}:{RUNNING}")
            await side.eval(
                "if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then "
                "redis.call('SET', KEYS[1], ARGV[1]) end",
                1,
                f"{prefix}:{PEAK}",
                running,
            )
            try:
                await asyncio.sleep(random.uniform(0.005, 0.03))
            finally:
                await side.decr(f"{prefix}:{RUNNING}")

        async def worker() -> None:
            nonlocal calls, limited
            while time.monotonic() < stop:
                try:
                    await call()
                    calls += 1
                except ConcurrencyLimited:
                    limited += 1

        await asyncio.gather(*[worker() for _ in range(tasks)])
        await side.aclose()
        await store.aclose()
        return calls, limited

    out.put(asyncio.run(main()))


def hold(url: str, prefix: str, limit: int, permits: int, lease: float, ready: Any) -> None:
    """Take ``permits`` permits (lease ``lease``), say so on ``ready``, then hold them for
    up to a minute (the test kills this process with SIGKILL meanwhile)."""

    async def main() -> None:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        lim = ConcurrencyLimit(limit, store=store, name="held", lease=lease)
        entered = asyncio.Event()
        count = 0

        async def one() -> None:
            nonlocal count
            async with lim.acquire():
                count += 1
                if count == permits:
                    entered.set()
                await asyncio.sleep(60)

        tasks = [asyncio.ensure_future(one()) for _ in range(permits)]
        await asyncio.wait_for(entered.wait(), 30)
        ready.put("held")
        await asyncio.gather(*tasks)

    asyncio.run(main())


def wait_in_queue(url: str, prefix: str, lease: float, ready: Any) -> None:
    """Queue for the one permit of limit "held" (someone else holds it), say so, and wait
    (the test kills this process with SIGKILL meanwhile)."""

    async def main() -> None:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        lim = ConcurrencyLimit(1, store=store, name="held", lease=lease)
        r = await store.concurrency_acquire(lim._spec, "", "", True)
        assert not r.granted
        ready.put(r.token)
        try:
            async with lim.acquire(timeout=60):
                pass
        except ConcurrencyLimited:
            pass

    asyncio.run(main())


def chaos(url: str, prefix: str, limit: int, seconds: float, tasks: int, lease: float) -> None:
    """Calls through a ConcurrencyLimit for ``seconds``, most of them cut short at a random
    await by a timeout (``asyncio.wait_for``, which cancels): while asking the store, while
    queued, during the call or during the release. The benchmark kills some of these
    processes with SIGKILL meanwhile."""

    async def main() -> None:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        lim = ConcurrencyLimit(limit, store=store, name="chaos", lease=lease)
        stop = time.monotonic() + seconds

        async def call() -> None:
            async with lim.acquire(timeout=1.0):
                await asyncio.sleep(random.uniform(0.0, 0.03))

        async def worker() -> None:
            while time.monotonic() < stop:
                with contextlib.suppress(asyncio.TimeoutError, ConcurrencyLimited):
                    await asyncio.wait_for(call(), random.uniform(0.0005, 0.04))

        await asyncio.gather(*[worker() for _ in range(tasks)])
        await asyncio.sleep(0.5)  # releases handed to the background complete
        await store.aclose()

    asyncio.run(main())
