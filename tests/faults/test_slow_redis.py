"""A slow Redis (every command delayed by a proxy): every decision stays within the time bound.

The store's ``timeout`` bounds the whole decision: the wait for one of the store's connection
slots (``max_concurrency``), connecting, the command and its ``NOSCRIPT`` reload. Past it the
fallback decides, so no decision takes longer than ``timeout`` + 50 ms of scheduling, however
many callers queue (a correctness bound the library states, not a benchmark: each decision's
wall time is measured and the maximum asserted).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores import FallbackStore
from resilience.stores.redis._health import health_of
from tests.faults._bounds import CANCEL_ALLOWANCE, warm_until_shared
from tests.latency_proxy import LatencyProxy
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.5  # RedisStore.from_url's default
# The bound the library states: timeout + 50 ms with redis-py >= 8, looser on redis-py 5
# (see tests/faults/_bounds.py and docs/failure-modes.md).
BOUND = TIMEOUT + CANCEL_ALLOWANCE
CALLERS = 640
ROUNDS = 3  # decisions per caller, back to back


async def _latencies(lim: SlidingWindowLimiter) -> tuple[list[float], list[object]]:
    latencies: list[float] = []
    outcomes: list[object] = []

    async def caller() -> None:
        for _ in range(ROUNDS):
            t0 = time.monotonic()
            try:
                outcomes.append((await lim.try_acquire()).allowed)
            except StoreUnavailable as exc:
                outcomes.append(exc)
            latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return latencies, outcomes


async def _slow_run(
    server: RedisServer, prefix: str, fallback: str
) -> tuple[list[float], list[object], int]:
    """One run: 640 callers x 3 decisions through a proxy adding 150 ms per command."""
    with LatencyProxy.running(server.port) as proxy:
        store = RedisStore.from_url(proxy.url, prefix=prefix, timeout=TIMEOUT)
        assert store._max_concurrency == 64
        lim = SlidingWindowLimiter(
            10**9,
            60.0,
            store=store,
            name="slow",
            guard=0,
            fallback=fallback,  # type: ignore[arg-type]
        )
        fs = lim.store
        assert isinstance(fs, FallbackStore)
        await warm_until_shared(lim, store, 64)  # connections and script warm
        base = fs.stats["window_acquire"]
        proxy.delay = 0.15  # Redis turns slow
        latencies, outcomes = await _latencies(lim)
        gate = store._gate
        assert gate is not None
        assert gate.free == gate.slots  # every slot came back, however its call ended
        assert not gate._waiters
        fell_back = fs.stats["window_acquire"] - base
        await fs.aclose()
    return latencies, outcomes, fell_back


@pytest.mark.parametrize("fallback", ["local", "deny"])
async def test_slow_redis_every_decision_within_timeout(
    fresh_redis_server: RedisServer, prefix: str, fallback: str
) -> None:
    """~150 ms per command, 640 concurrent callers on 64 connections: the queue for a
    connection alone would last 1.5 s; every decision still returns within timeout + 50 ms,
    decided by Redis or by the fallback.

    The bound is on the library's own scheduling: a 2-core machine running other work can
    deschedule this process for longer than 50 ms, so a run over the bound gets one more
    chance (a second run on a fresh prefix); two runs over it fail the test."""
    runs = [await _slow_run(fresh_redis_server, prefix, fallback)]
    if max(runs[0][0]) > BOUND:
        first = sorted(runs[0][0])[-3:]
        runs.append(await _slow_run(fresh_redis_server, prefix + ":again", fallback))
        assert max(runs[1][0]) <= BOUND, (first, sorted(runs[1][0])[-5:])
    splits = []
    for latencies, outcomes, fell_back in runs:
        assert len(latencies) == CALLERS * ROUNDS
        if fallback == "local":
            assert all(o is True for o in outcomes)
        else:
            assert all(o is True or isinstance(o, StoreUnavailable) for o in outcomes)
            fell_back = sum(isinstance(o, StoreUnavailable) for o in outcomes)
        splits.append(fell_back)
    # Redis decided for some, the fallback for others (the test exercises both paths). On a
    # machine slow enough to need the second run, that run may see every decision fall back
    # (seen once in CI on redis-py 5.0): the two runs together must show both.
    assert any(f > 0 for f in splits), splits
    assert any(f < CALLERS * ROUNDS for f in splits), splits


async def _queue_run(
    server: RedisServer, prefix: str
) -> tuple[list[float], list[StoreUnavailable], bool]:
    """One run: 40 callers on 4 connections through a proxy adding 100 ms per command."""
    with LatencyProxy.running(server.port) as proxy:
        store = RedisStore.from_url(proxy.url, prefix=prefix, timeout=TIMEOUT, max_connections=4)
        lim = SlidingWindowLimiter(10**9, 60.0, store=store, name="q", guard=0, fallback="deny")
        await warm_until_shared(lim, store, 4)  # connections and script warm
        proxy.delay = 0.1
        latencies: list[float] = []
        failures: list[StoreUnavailable] = []

        async def one() -> None:
            t0 = time.monotonic()
            try:
                await lim.try_acquire()
            except StoreUnavailable as exc:
                failures.append(exc)
            latencies.append(time.monotonic() - t0)

        # 4 connections, 100 ms per command: 4 rounds fit in the timeout, 40 callers do not.
        await asyncio.gather(*(one() for _ in range(40)))
        degraded = health_of(store).degraded
        await store.aclose()
    return latencies, failures, degraded


async def test_queue_timeout_is_not_an_outage(fresh_redis_server: RedisServer, prefix: str) -> None:
    """Callers that ran out of time queueing for a connection while Redis kept answering the
    others fall back, but do not put the store in degraded mode: Redis is slow, not down.
    (A run over the time bound gets a second run, as above.)"""
    runs = [await _queue_run(fresh_redis_server, prefix)]
    if max(runs[0][0]) > BOUND:
        runs.append(await _queue_run(fresh_redis_server, prefix + ":again"))
    for _latencies, failures, degraded in runs:  # every run: slow is not down
        assert failures
        assert any("connection" in str(f) for f in failures), failures[:3]
        assert not degraded
    first = sorted(runs[0][0])[-3:]
    assert max(runs[-1][0]) <= BOUND, (first, sorted(runs[-1][0])[-5:])
