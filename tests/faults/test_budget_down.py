"""The retry budget while Redis is down: a local budget (same ratio and floor), then shared again.

A real redis-server is killed mid-test and restarted empty (it keeps nothing on disk).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from resilience import RedisStore, Retry, RetryBudget, backoff
from resilience.policies.retry._budget import WINDOW
from resilience.stores import FallbackStore
from resilience.stores.redis._health import PROBE_MAX, health_of
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.25
ZERO = backoff.constant(0)


def always_failing() -> tuple[Callable[[], Awaitable[None]], list[int]]:
    count = [0]

    async def fn() -> None:
        count[0] += 1
        raise ConnectionError("upstream down")

    return fn, count


async def shared_counts(store: RedisStore, name: str) -> tuple[int, int]:
    """(requests, retries) the shared budget counts now (a read: ratio 0 and no floor grant
    nothing, and a refusal with no deposits changes nothing)."""
    r = await store.budget_withdraw(name, 0, 0, 0, WINDOW)
    assert not r.allowed
    return r.requests, r.retries


async def calls(retry: Retry, fn: Callable[[], Awaitable[None]], n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await retry.call(fn)


async def test_local_budget_while_redis_down_then_shared_again(
    fresh_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resilience")
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=TIMEOUT)
    # Floor only (ratio 0): 3 retries per 10 s window, shared or local.
    budget = RetryBudget(0, 0.3, store=store, name="api")
    retry = Retry(2, backoff=ZERO, budget=budget)
    fn, count = always_failing()
    try:
        # Up: the shared budget grants and counts.
        await calls(retry, fn, 2)
        assert count[0] == 4
        assert await shared_counts(store, "api") == (2, 2)

        fresh_redis_server.kill()
        # Down: retries go on within a local budget with the same floor (3 per window), not
        # refused wholesale (0 retries) and not unbounded (10).
        t0 = time.monotonic()
        await calls(retry, fn, 10)
        assert count[0] - 4 == 10 + 3
        assert time.monotonic() - t0 < 10 * (TIMEOUT + 0.1)  # no call waits past the timeout
        assert isinstance(budget.store, FallbackStore)
        assert budget.store.stats["budget_withdraw"] == 10
        assert any(
            "budget_withdraw decisions use fallback 'local'" in r.getMessage()
            for r in caplog.records
        )

        # Back (empty): the shared budget decides again within a probe interval. The local
        # budget is spent, so a granted retry proves the shared one answered.
        fresh_redis_server.start()
        t0 = time.monotonic()
        while True:
            before = count[0]
            await calls(retry, fn, 1)
            if count[0] - before == 2:
                break
            assert time.monotonic() - t0 < PROBE_MAX + TIMEOUT + 2, "shared budget not back"
            await asyncio.sleep(0.02)
        assert not health_of(store).degraded
        # Local decisions were not replayed into Redis: it counts only the retry granted now.
        requests, retries = await shared_counts(store, "api")
        assert retries == 1
        assert 1 <= requests <= count[0]
    finally:
        await store.aclose()


@pytest.mark.parametrize(("fallback", "retried"), [("allow", 5), ("deny", 0)])
async def test_budget_fallback_allow_and_deny(prefix: str, fallback: str, retried: int) -> None:
    dead = RedisStore.from_url("redis://127.0.0.1:1/0", prefix=prefix, timeout=TIMEOUT)
    budget = RetryBudget(0, 0, store=dead, name="b", fallback=fallback)  # type: ignore[arg-type]
    fn, count = always_failing()
    try:
        await calls(Retry(2, backoff=ZERO, budget=budget), fn, 5)
    finally:
        await dead.aclose()
    assert count[0] == 5 + retried


def test_fallback_option_validated() -> None:
    with pytest.raises(ValueError, match="fallback"):
        RetryBudget(fallback="open")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fallback"):
        RetryBudget(fallback=None)  # type: ignore[arg-type]
