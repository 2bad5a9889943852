"""The breaker's failure log is bounded by its window on every store (issue 12, item 8).

Successes are not recorded (count mode), so a burst of failures followed by nothing but
successes used to stay in the memory store's log for ever; the Redis log expires ``window``
+ 1 s after its last failure. The memory store now drops the entries once they have left the
window, without anything on the success path. Measured by counting the retained entries.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from resilience import CircuitBreaker, MemoryStore, RedisStore
from resilience.stores.redis._keys import breaker_keys

WINDOW = 0.3
BURST = 20_000


def _retained(store: MemoryStore, name: str) -> int:
    b = store._breakers.get((name, ""))
    return 0 if b is None else len(b.failures)


async def test_memory_failure_log_is_dropped_once_the_window_has_passed() -> None:
    store = MemoryStore()
    cb = CircuitBreaker(10**6, WINDOW, 30, store=store, name="burst")
    gen = (await store.breaker_acquire(cb.spec, "")).gen
    for _ in range(BURST):
        await store.breaker_record(cb.spec, "", "fail", gen, "", 0)
    assert _retained(store, "burst") > BURST // 2  # (some may already have left the window)

    async def ok() -> str:
        return "ok"

    # Three windows of nothing but successes (which are never written).
    for _ in range(30):
        assert await cb.call(ok) == "ok"
        await asyncio.sleep(3 * WINDOW / 30)
    await asyncio.sleep(0.05)
    assert _retained(store, "burst") == 0
    assert await cb.failures() == 0


async def test_memory_failure_log_never_holds_more_than_a_window() -> None:
    """Failures spread over several windows: what is retained is only the last window's."""
    store = MemoryStore()
    cb = CircuitBreaker(10**6, WINDOW, 30, store=store, name="spread")
    gen = (await store.breaker_acquire(cb.spec, "")).gen
    for _ in range(12):
        for _ in range(500):
            await store.breaker_record(cb.spec, "", "fail", gen, "", 0)
        await asyncio.sleep(WINDOW / 4)
        assert _retained(store, "spread") <= 5 * 500
    await asyncio.sleep(WINDOW + 0.1)
    assert _retained(store, "spread") == 0


async def test_redis_failure_log_expires_after_the_window(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    """The same bound on Redis: the log key expires ``window`` + 1 s after its last failure."""
    cb = CircuitBreaker(10**6, WINDOW, 30, store=redis_store, name="burst")
    gen = (await redis_store.breaker_acquire(cb.spec, "")).gen
    for _ in range(200):
        await redis_store.breaker_record(cb.spec, "", "fail", gen, "", 0)
    log = breaker_keys(redis_store.prefix, "burst", "")[1]
    assert await redis_client.zcard(log) == 200
    assert 0 < await redis_client.pttl(log) <= WINDOW * 1000 + 1000
    await asyncio.sleep(WINDOW + 1.1)
    assert await redis_client.exists(log) == 0
