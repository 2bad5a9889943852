"""Worker-process bodies for the rate limiter's multi-process tests (spawned, so importable).

Each function is a ``multiprocessing`` target or a ``subprocess`` entry point: it builds its own
:class:`resilience.RedisStore`, runs a bounded load, and reports through a queue.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from resilience import RedisStore, SlidingWindowLimiter, all_of


def hammer(
    url: str,
    prefix: str,
    limit: int,
    window: float,
    seconds: float,
    tasks: int,
    out: Any,
    cost: int = 1,
    grace_us: int | None = None,
    merge_from: int | None = None,
) -> None:
    """Half the tasks ``acquire`` (reservations), half ``try_acquire`` every 20-60 ms; each
    admission costs ``cost``. Reports the number of admissions. ``grace_us``, ``merge_from``:
    the store's ``MERGE_GRACE_US`` and ``MERGE_FROM`` in this process (see
    ``resilience.stores.base``)."""
    from resilience.stores.redis import _window

    if grace_us is not None:
        vars(_window)["MERGE_GRACE_US"] = grace_us  # the module reads it at each call
    if merge_from is not None:
        vars(_window)["MERGE_FROM"] = merge_from

    async def main() -> int:
        store = RedisStore.from_url(url, prefix=prefix, timeout=5.0, max_connections=32)
        lim = SlidingWindowLimiter(limit, window, store=store, name="hammer", guard=0)
        stop = time.monotonic() + seconds
        admitted = 0

        async def waiter() -> None:
            nonlocal admitted
            while True:
                left = stop - time.monotonic()
                if left <= 0:
                    return
                try:
                    await lim.acquire(cost=cost, timeout=left)
                except Exception:  # RateLimited: the next slot lies beyond the run
                    return
                admitted += 1

        async def trier() -> None:
            nonlocal admitted
            while time.monotonic() < stop:
                if (await lim.try_acquire(cost=cost)).allowed:
                    admitted += 1
                await asyncio.sleep(random.uniform(0.02, 0.06))

        await asyncio.gather(*[waiter() if i % 2 else trier() for i in range(tasks)])
        await store.aclose()
        return admitted

    out.put(asyncio.run(main()))


def skewed_decisions(url: str, prefix: str, shift: float, out: Any) -> None:
    """Take 6 try_acquire decisions on limit 5 per 2 s with this process's clocks shifted."""
    real_time, real_mono = time.time, time.monotonic
    real_time_ns, real_mono_ns = time.time_ns, time.monotonic_ns
    time.time = lambda: real_time() + shift
    time.monotonic = lambda: real_mono() + shift
    time.time_ns = lambda: real_time_ns() + int(shift * 1e9)
    time.monotonic_ns = lambda: real_mono_ns() + int(shift * 1e9)

    async def main() -> list[tuple[bool, int, float]]:
        store = RedisStore.from_url(url, prefix=prefix, timeout=5.0)
        lim = SlidingWindowLimiter(5, 2.0, store=store, name="skew", guard=0)
        res = []
        for _ in range(6):
            d = await lim.try_acquire()
            res.append((d.allowed, d.remaining, d.retry_after))
        await store.aclose()
        return res

    out.put(asyncio.run(main()))


def all_of_load(url: str, prefix: str, seconds: float, tasks: int, seed: int, out: Any) -> None:
    """try_acquire on all_of(rpm, tpm) with random token costs; report what was admitted."""

    async def main() -> list[int]:
        rng = random.Random(seed)
        store = RedisStore.from_url(url, prefix=prefix, timeout=5.0)
        rpm = SlidingWindowLimiter(20, 30.0, store=store, name="rpm", guard=0)
        tpm = SlidingWindowLimiter(1000, 30.0, store=store, name="tpm", guard=0)
        both = all_of(rpm, tpm)
        stop = time.monotonic() + seconds
        costs: list[int] = []

        async def one() -> None:
            while time.monotonic() < stop:
                c = rng.randint(1, 200)
                if (await both.try_acquire(cost={"tpm": c})).allowed:
                    costs.append(c)
                await asyncio.sleep(rng.uniform(0.0, 0.01))

        await asyncio.gather(*[one() for _ in range(tasks)])
        await store.aclose()
        return costs

    out.put(asyncio.run(main()))


def leased_hammer(
    url: str,
    prefix: str,
    limit: int,
    window: float,
    seconds: float,
    tasks: int,
    lease: int,
    horizon: float,
    out: Any,
) -> None:
    """``hammer`` in leased mode: every task ``acquire``s in a loop (a timeout bounded by the run)
    on a limiter with ``lease``; then waits out the horizon so unused permits are given back."""

    async def main() -> int:
        store = RedisStore.from_url(url, prefix=prefix, timeout=5.0, max_connections=32)
        lim = SlidingWindowLimiter(
            limit, window, store=store, name="leased", guard=0, lease=lease, lease_horizon=horizon
        )
        stop = time.monotonic() + seconds
        admitted = 0

        async def caller() -> None:
            nonlocal admitted
            while True:
                left = stop - time.monotonic()
                if left <= 0:
                    return
                try:
                    await lim.acquire(timeout=left)
                except Exception:  # RateLimited: the next slot lies beyond the run
                    return
                admitted += 1
                await asyncio.sleep(random.uniform(0, 0.002))

        await asyncio.gather(*[caller() for _ in range(tasks)])
        await asyncio.sleep(2 * horizon + 0.1)  # the last leases end and give back their rest
        await store.aclose()
        return admitted

    out.put(asyncio.run(main()))
