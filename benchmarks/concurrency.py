"""The fleet-wide concurrency limit: its cost per decision, its bound, and no leak under chaos.

Run: ``.venv/bin/python benchmarks/concurrency.py [--seconds 3]`` (about 30 s; starts its own
redis-server on a free loopback port, stopped at exit).

1. **Decisions per second**, one process, 64 tasks, no work inside: a ``ConcurrencyLimit``
   permit taken and given back (``async with limit.acquire()``: two store calls) against a
   ``SlidingWindowLimiter`` admission (``acquire()``: one store call), each with a limit that
   never binds, on the memory store and on redis-server.
2. **Max in flight across 4 processes**: 4 processes x 6 tasks call through one limit of 5
   for ``--seconds``; every call counts itself in a side counter on the same Redis (INCR on
   entry, DECR on exit): the highest count seen must equal the limit.
3. **Chaos**: 4 processes x 8 tasks call through a limit of 4 (lease 1 s) for ``--seconds``,
   most calls cut short by a random timeout (a cancellation at any await: asking, queued, in
   the call, releasing); 2 of the processes are killed with SIGKILL halfway. Afterwards, once
   a lease has passed, the store must hold no permit and no waiter, and a fresh process must
   get all 4 permits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from resilience import (
    ConcurrencyLimit,
    MemoryStore,
    RedisStore,
    SlidingWindowLimiter,
    Store,
)
from resilience.stores.redis._keys import concurrency_keys
from tests import concurrency_workers
from tests.redis_servers import RedisServer

SPAWN = multiprocessing.get_context("spawn")
TASKS = 64


async def _rate(one: object, seconds: float) -> float:
    stop = time.monotonic() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await one()  # type: ignore[operator]
            done += 1

    await asyncio.gather(*[loop() for _ in range(TASKS)])
    return done / seconds


async def decisions(store: Store, seconds: float) -> tuple[float, float]:
    cl = ConcurrencyLimit(10**9, store=store, name="bench-cl")
    wl = SlidingWindowLimiter(10**12, 60.0, store=store, name="bench-wl", guard=0)

    async def permit() -> None:
        async with cl.acquire():
            pass

    async def admission() -> None:
        await wl.acquire()

    return await _rate(permit, seconds), await _rate(admission, seconds)


async def part1(url: str, seconds: float) -> None:
    print("1. decisions/s, 1 process x 64 tasks (ConcurrencyLimit permit = acquire + release)")
    print(f"   {'store':<14} {'ConcurrencyLimit':>18} {'SlidingWindowLimiter':>22}")
    cl, wl = await decisions(MemoryStore(), seconds)
    print(f"   {'memory':<14} {cl:>18,.0f} {wl:>22,.0f}")
    store = RedisStore.from_url(url, prefix="bench1", timeout=2.0)
    cl, wl = await decisions(store, seconds)
    await store.aclose()
    print(f"   {'redis-server':<14} {cl:>18,.0f} {wl:>22,.0f}")


async def part2(url: str, seconds: float) -> None:
    limit, prefix = 5, "bench2"
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=concurrency_workers.hammer, args=(url, prefix, limit, seconds, 6, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    side = aioredis.Redis.from_url(url)
    peak = int(await side.get(f"{prefix}:{concurrency_workers.PEAK}") or 0)
    await side.aclose()
    calls = sum(c for c, _ in results)
    print(
        f"2. 4 processes x 6 tasks, limit {limit}, {seconds:g} s: {calls} calls, "
        f"max in flight observed = {peak} (limit {limit})"
    )


async def part3(url: str, seconds: float) -> None:
    limit, lease, prefix = 4, 1.0, "bench3"
    procs = [
        SPAWN.Process(
            target=concurrency_workers.chaos, args=(url, prefix, limit, seconds, 8, lease)
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    await asyncio.sleep(2.0 + seconds / 2)  # spawn time + half the run
    killed = 0
    for p in procs[:2]:
        if p.pid is not None and p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            killed += 1
    for p in procs:
        p.join(60)
    end = time.monotonic()
    side = aioredis.Redis.from_url(url)
    h, _q, e, _ = concurrency_keys(prefix, "chaos", "")
    await asyncio.sleep(lease + 0.2)
    store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
    lim = ConcurrencyLimit(limit, store=store, name="chaos", lease=lease)
    # Live entries only (lease expiry after Redis's now): an expired one is forgotten by the
    # next script, and nobody would count it.
    sec, usec = await side.time()
    now = f"({sec * 1_000_000 + usec}"
    holders = await side.zcount(h, now, "+inf")
    waiters = await side.zcount(e, now, "+inf")
    got = 0
    try:
        async with (
            lim.acquire(timeout=0),
            lim.acquire(timeout=0),
            lim.acquire(timeout=0),
            lim.acquire(timeout=0),
        ):
            got = 4
    except Exception as exc:
        print("   fresh process could not take every permit:", exc)
    await store.aclose()
    await side.aclose()
    print(
        f"3. chaos: 4 processes x 8 tasks, limit {limit}, lease {lease:g} s, {seconds:g} s, "
        f"{killed} killed with SIGKILL; {lease + 0.2:g} s after the run "
        f"({time.monotonic() - end:.1f} s): permits held {holders}, waiters {waiters}, "
        f"a fresh process took {got}/{limit} permits at once"
    )


async def main(seconds: float) -> None:
    with RedisServer() as server:
        await part1(server.url, min(seconds, 2.0))
        await part2(server.url, seconds)
        await part3(server.url, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args().seconds))
