"""The circuit breaker while Redis is down (CB-10, CB-11) and the retry budget's fallback."""

from __future__ import annotations

import contextlib
import time

import pytest

from resilience import CircuitBreaker, CircuitOpen, RedisStore, StoreUnavailable
from resilience.stores import FallbackStore
from resilience.stores.redis._health import PROBE_MAX, health_of
from tests.faults._bounds import CANCEL_ALLOWANCE
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.25
BOUND = TIMEOUT + CANCEL_ALLOWANCE  # timeout + 50 ms (looser on redis-py 5: _bounds.py)


class Boom(Exception):
    pass


async def _fail() -> None:
    raise Boom


async def _ok() -> str:
    return "ok"


async def test_local_breaker_trips_while_redis_down_then_shared_state_resumes(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=TIMEOUT)
    br = CircuitBreaker(3, 60.0, 0.5, store=store, name="b", state_refresh=0)
    assert await br.call(_ok) == "ok"
    fresh_redis_server.kill()
    latencies = []
    outcomes: list[type[BaseException]] = []
    for _ in range(10):
        t0 = time.monotonic()
        try:
            await br.call(_fail)
        except (Boom, CircuitOpen) as exc:
            outcomes.append(type(exc))
        latencies.append(time.monotonic() - t0)
    # CB-10: the local breaker (same threshold, 3) trips; no store error escapes; bounded.
    assert outcomes[:3] == [Boom, Boom, Boom]
    assert set(outcomes[3:]) == {CircuitOpen}
    assert max(latencies) <= BOUND, latencies
    fs = br.store
    assert isinstance(fs, FallbackStore)
    assert fs.stats["breaker_record"] >= 3
    # CB-11: Redis back (empty: it was killed); shared state within one probe interval, and
    # the failures counted locally were not replayed into it.
    fresh_redis_server.start()
    t0 = time.monotonic()
    while health_of(store).degraded and time.monotonic() - t0 < PROBE_MAX + 2:
        with contextlib.suppress(CircuitOpen):
            await br.call(_ok)
        await _sleep(0.02)
    assert time.monotonic() - t0 <= PROBE_MAX + TIMEOUT + 0.3
    state = await store.breaker_admin(br.spec, "", "state", 0)
    assert state.failures == 0
    assert state.state == "closed"
    assert await br.call(_ok) == "ok"
    await store.aclose()


async def test_breaker_deny_and_allow(prefix: str) -> None:
    dead = "redis://127.0.0.1:1/0"
    deny = CircuitBreaker(
        store=RedisStore.from_url(dead, prefix=prefix, timeout=TIMEOUT),
        fallback="deny",
        state_refresh=0,
    )
    with pytest.raises(StoreUnavailable):
        await deny.call(_ok)
    allow = CircuitBreaker(
        1,
        store=RedisStore.from_url(dead, prefix=prefix, timeout=TIMEOUT),
        fallback="allow",
        state_refresh=0,
    )
    for _ in range(5):  # never trips: every decision admits
        with pytest.raises(Boom):
            await allow.call(_fail)
    assert isinstance(allow.store, FallbackStore)
    assert allow.store.stats["breaker_acquire"] >= 5


def test_fallback_option_validated() -> None:
    with pytest.raises(ValueError, match="fallback"):
        CircuitBreaker(fallback="open")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fallback"):
        CircuitBreaker(fallback=None)  # type: ignore[arg-type]


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)
