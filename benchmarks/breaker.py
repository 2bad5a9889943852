"""Circuit breaker, happy path (closed): decisions per second, ours next to pybreaker's.

Run: ``.venv/bin/python benchmarks/breaker.py [--seconds 1.0]``

Starts its own redis-server on a free loopback port (stopped at exit). Each row runs one
protected call after another in one task for about ``--seconds`` (the "x16" row: 16 tasks),
and reports calls per second, µs per call and the ratio to pybreaker with its Redis storage:

- ``await fn()``: the bare call, for scale.
- ours, MemoryStore: one in-process decision per call.
- ours, RedisStore: the default ``state_refresh`` (1 s): while closed a success costs no
  round trip; the state is re-read at most once per second.
- ours, RedisStore, ``state_refresh=0``: one EVALSHA per call (the cost of asking every time).
- pybreaker, memory storage / ``CircuitRedisStorage``: its own ``call`` on a sync function (the
  way pybreaker is used), and through :class:`resilience.PyBreakerPolicy` on a coroutine.
  ``CircuitRedisStorage`` needs a *blocking* ``redis.Redis`` client: its round trips (GET of
  the state, then SET of the counter on success) stall the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pybreaker
import redis

from resilience import CircuitBreaker, MemoryStore, PyBreakerPolicy, RedisStore
from tests.redis_servers import RedisServer


async def target() -> int:
    return 1


def sync_target() -> int:
    return 1


async def measure_async(fn: Callable[[], Awaitable[Any]], seconds: float, tasks: int = 1) -> float:
    for _ in range(50):  # warm up (connections, scripts, caches)
        await fn()
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            for _ in range(100):
                await fn()
            done += 100

    t0 = time.perf_counter()
    await asyncio.gather(*[loop() for _ in range(tasks)])
    return done / (time.perf_counter() - t0)


def measure_sync(fn: Callable[[], Any], seconds: float) -> float:
    for _ in range(50):
        fn()
    done = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop:
        for _ in range(100):
            fn()
        done += 100
    return done / (time.perf_counter() - t0)


async def main(seconds: float) -> None:
    rows: list[tuple[str, float]] = []
    with RedisServer() as server:
        rows.append(("await fn() (bare)", await measure_async(target, seconds)))

        mem = CircuitBreaker(store=MemoryStore(), name="bench")(target)
        rows.append(("ours, MemoryStore", await measure_async(mem, seconds)))

        store = RedisStore.from_url(server.url, prefix="bench")
        ours = CircuitBreaker(store=store, name="bench")(target)
        rows.append(("ours, RedisStore (state_refresh=1s)", await measure_async(ours, seconds)))
        ours0 = CircuitBreaker(store=store, name="bench0", state_refresh=0)(target)
        rows.append(("ours, RedisStore, state_refresh=0", await measure_async(ours0, seconds)))
        rows.append(
            ("ours, RedisStore, state_refresh=0, x16", await measure_async(ours0, seconds, 16))
        )
        await store.aclose()

        pb_mem = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=30)
        rows.append(
            (
                "pybreaker memory, cb.call(sync fn)",
                measure_sync(lambda: pb_mem.call(sync_target), seconds),
            )
        )
        pb_mem_policy = PyBreakerPolicy(pb_mem)(target)
        rows.append(
            ("pybreaker memory, PyBreakerPolicy", await measure_async(pb_mem_policy, seconds))
        )

        client = redis.Redis.from_url(server.url)
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace="b")
        pb_redis = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=30, state_storage=storage)
        before = sum(int(v["calls"]) for v in client.info("commandstats").values())
        n0 = time.perf_counter()
        pb_rate = measure_sync(lambda: pb_redis.call(sync_target), seconds)
        calls = pb_rate * (time.perf_counter() - n0)
        after = sum(int(v["calls"]) for v in client.info("commandstats").values())
        rows.append(("pybreaker CircuitRedisStorage, cb.call(sync fn)", pb_rate))
        pb_redis_policy = PyBreakerPolicy(pb_redis)(target)
        rows.append(
            (
                "pybreaker CircuitRedisStorage, PyBreakerPolicy",
                await measure_async(pb_redis_policy, seconds),
            )
        )
        client.close()

    base = rows[-2][1]
    print(f"Circuit breaker, happy path (closed); {seconds:g} s per row, Redis on loopback")
    print(f"{'configuration':<50} {'calls/s':>10} {'us/call':>9} {'x pybreaker+Redis':>18}")
    for name, rate in rows:
        print(f"{name:<50} {rate:>10,.0f} {1e6 / rate:>9.2f} {rate / base:>18.1f}")
    print(
        f"(pybreaker CircuitRedisStorage: ~{(after - before) / max(calls, 1):.1f} Redis "
        "commands per call, measured with INFO commandstats)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per row")
    args = parser.parse_args()
    asyncio.run(main(args.seconds))
