"""With Redis down, a tight decision loop must not starve the event loop.

While the store is degraded, decisions fail fast without touching Redis and the fallback
decides in memory: without a yield, ``while ...: await limiter.acquire()`` would never suspend,
so other tasks (a heartbeat here) would stall and the store's recovery probe, in flight in
another task, would never complete. Every fallback decision suspends once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time

import pytest

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores import FallbackStore
from resilience.stores.redis._health import health_of
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

RESTART_AFTER = 1.0  # seconds of outage
RECOVERY = 3.0  # shared decisions resume within this of Redis answering again
MAX_GAP = 0.5  # the heartbeat's longest gap: a loop that never yields stalls it for seconds;
# a busy 2-core machine (CI) was seen to pause a healthy loop for 0.3 s once


@pytest.mark.parametrize("fallback", ["allow", "local", "deny"])
async def test_tight_loop_on_fallback_yields(
    fresh_redis_server: RedisServer, prefix: str, fallback: str
) -> None:
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=0.25)
    lim = SlidingWindowLimiter(
        10**9,
        60.0,
        store=store,
        name="tight",
        guard=0,
        fallback=fallback,  # type: ignore[arg-type]
    )
    fs = lim.store
    assert isinstance(fs, FallbackStore)
    assert (await lim.acquire()).allowed
    fresh_redis_server.kill()
    with pytest.raises(StoreUnavailable) if fallback == "deny" else _nothing():
        await lim.acquire()  # the store is degraded from here on
    assert health_of(store).degraded

    # Redis restarts in a thread (the test's loop may be starved), at a known time.
    back: list[float] = []

    def restart() -> None:
        fresh_redis_server.start()
        back.append(time.monotonic())

    timer = threading.Timer(RESTART_AFTER, restart)
    timer.start()
    started = time.monotonic()
    stop_at = started + RESTART_AFTER + RECOVERY + 3.0  # bounded however it goes
    heartbeats: list[float] = []
    shared_at: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            heartbeats.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def tight() -> None:
        n = 0
        while time.monotonic() < stop_at and not shared_at and n < 5_000_000:
            n += 1
            before = fs.stats["window_acquire"]
            with contextlib.suppress(StoreUnavailable):
                await lim.acquire()
            if fs.stats["window_acquire"] == before:  # decided by Redis
                shared_at.append(time.monotonic())

    hb = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    await asyncio.gather(tight(), tight())
    finished = time.monotonic()
    done.set()
    await hb
    timer.join(15)
    await fs.aclose()
    assert back, "redis-server did not restart"
    beats = [*heartbeats, finished]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert heartbeats[0] - started < MAX_GAP
    assert max(gaps) < MAX_GAP, sorted(gaps)[-3:]
    assert shared_at, "shared decisions never resumed"
    assert shared_at[0] - back[0] < RECOVERY


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
