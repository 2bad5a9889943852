"""An open breaker survives a Redis that forgot it (issue 12, item 6).

A redis-server restarted without persistence comes back empty: the breaker's state hash is
gone, which every script reads as "closed, generation 0". A process that learned an open
deadline must keep refusing until that deadline in every configuration (``state_refresh``
0, the default, long; every ``fallback``), and re-seed the store so that the rest of the
fleet is refused too. A *missing* state is not a *close*: an explicit close (an operator's,
or a probe's) writes its generation, and is obeyed at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitOpen, RedisStore, StoreUnavailable
from resilience.stores.base import BreakerReply, BreakerSpec
from resilience.stores.redis._health import health_of
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

S = 1_000_000


class Boom(Exception):
    pass


async def _ok() -> str:
    return "ok"


async def _until_up(store: RedisStore, spec: BreakerSpec, timeout: float = 10.0) -> None:
    """The restarted server answers through ``store`` again (its health recovered)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await store.breaker_admin(spec, "warm-up", "state", 0)
            if not health_of(store).degraded:
                return
        except StoreUnavailable:
            pass
        assert time.monotonic() < deadline, "the restarted redis-server never answered"
        await asyncio.sleep(0.05)


async def _reseeded_and_refused(
    store: RedisStore,
    other_store: RedisStore,
    spec: BreakerSpec,
    opened: BreakerReply,
    call: Callable[[], Awaitable[object]],
    timeout: float = 5.0,
) -> CircuitBreaker:
    """The process re-seeded the store (with the generation it knew, the same deadline), so
    a process that never saw the trip (a breaker on ``other_store``) is refused as well,
    until that deadline. Returns that other process's breaker."""
    deadline = time.monotonic() + timeout
    while True:
        st = await store.breaker_admin(spec, "", "state", 0)
        if st.state == "open" and st.gen == opened.gen:
            break
        assert time.monotonic() < deadline, f"the store was not re-seeded: {st}"
        await asyncio.sleep(0.05)
    assert 25 * S < st.wait_us <= opened.wait_us
    other = CircuitBreaker(2, 60, 30, store=other_store, name="api", state_refresh=0)
    with pytest.raises(CircuitOpen) as info:
        await other.call(call)
    assert 25 < info.value.retry_after <= 30
    return other


async def _trip(cb: CircuitBreaker) -> None:
    async def boom() -> None:
        raise Boom

    for _ in range(cb.failure_threshold):
        with pytest.raises(Boom):
            await cb.call(boom)


@pytest.mark.parametrize("state_refresh", [0.0, None, 30.0], ids=["refresh0", "default", "30s"])
async def test_a_restart_while_open_lets_no_call_through_and_the_store_is_reseeded(
    fresh_redis_server: RedisServer, prefix: str, state_refresh: float | None
) -> None:
    url = fresh_redis_server.url
    store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    other_store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    kw: dict[str, Any] = {} if state_refresh is None else {"state_refresh": state_refresh}
    cb = CircuitBreaker(2, 60, 30, store=store, name="api", **kw)
    try:
        await _trip(cb)
        opened = await store.breaker_admin(cb.spec, "", "state", 0)
        assert opened.state == "open"

        fresh_redis_server.restart()  # no persistence: the breaker's state is gone
        await _until_up(store, cb.spec)

        upstream = 0

        async def call() -> None:
            nonlocal upstream
            upstream += 1
            raise Boom

        results = await asyncio.gather(*[cb.call(call) for _ in range(60)], return_exceptions=True)
        assert upstream == 0, results
        assert all(isinstance(r, CircuitOpen) for r in results), results
        assert all(25 < r.retry_after <= 30 for r in results if isinstance(r, CircuitOpen))

        other = await _reseeded_and_refused(store, other_store, cb.spec, opened, call)
        assert upstream == 0

        # An explicit close (an operator's, elsewhere) is obeyed at once: with
        # state_refresh=0 at the next call, else as soon as it is pushed.
        await other.close()
        t0 = time.monotonic()
        while True:
            try:
                assert await cb.call(_ok) == "ok"
                break
            except CircuitOpen:
                assert state_refresh != 0.0, "state_refresh=0 asks the store on every call"
                assert time.monotonic() - t0 < 3.0, "the close was not obeyed"
                await asyncio.sleep(0.02)
    finally:
        await store.aclose()
        await other_store.aclose()


@pytest.mark.parametrize("fallback", ["local", "allow"])
async def test_a_known_deadline_holds_while_redis_is_down(
    fresh_redis_server: RedisServer, prefix: str, fallback: Any
) -> None:
    """state_refresh=0 caches nothing, yet the deadline this process learned still holds when
    the store cannot answer (the fallback knows nothing of it)."""
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=0.25)
    cb = CircuitBreaker(1, 60, 30, store=store, name="api", state_refresh=0, fallback=fallback)
    try:
        await _trip(cb)
        fresh_redis_server.kill()
        upstream = 0

        async def call() -> None:
            nonlocal upstream
            upstream += 1
            raise Boom

        for _ in range(10):
            with pytest.raises(CircuitOpen) as info:
                await cb.call(call)
            assert 25 < info.value.retry_after <= 30
        assert upstream == 0
    finally:
        fresh_redis_server.kill()
        await store.aclose()


async def test_an_explicit_close_written_after_the_loss_is_obeyed(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    """After a restart an operator closes the breaker (generation 1, lower than the one this
    process knows): a written close, not a lost state, so it is obeyed and not overwritten."""
    url = fresh_redis_server.url
    store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    other_store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    cb = CircuitBreaker(2, 60, 30, store=store, name="api", state_refresh=0)
    other = CircuitBreaker(2, 60, 30, store=other_store, name="api", state_refresh=0)
    try:
        await cb.open()
        await cb.close()
        await cb.open()  # generation 3
        fresh_redis_server.restart()
        await _until_up(store, cb.spec)
        await _until_up(other_store, other.spec)
        await other.close()  # generation 1, written
        assert await cb.call(_ok) == "ok"
        await asyncio.sleep(0.1)
        st = await store.breaker_admin(cb.spec, "", "state", 0)
        assert (st.state, st.gen) == ("closed", 1)
    finally:
        await store.aclose()
        await other_store.aclose()


async def test_a_loss_before_the_first_subscription_is_reseeded_too(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    """The breaker trips, and the store restarts before this process's subscription to
    transitions ever came up (its first connection was slow): the subscription's first
    "established" must re-seed the open state as a re-established one does, or the rest of
    the fleet calls an upstream this process knows to be refusing."""
    url = fresh_redis_server.url
    store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    other_store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    release = asyncio.Event()
    open_pubsub = store._events.open_pubsub

    async def held_back() -> Any:
        await release.wait()  # the subscription's first connection waits for the restart
        return await open_pubsub()

    store._events.open_pubsub = held_back
    # The default state_refresh: the view follows pushed transitions (state_refresh=0 asks
    # the store at every call and subscribes to nothing).
    cb = CircuitBreaker(2, 60, 30, store=store, name="api")
    try:
        await _trip(cb)
        opened = await store.breaker_admin(cb.spec, "", "state", 0)
        assert opened.state == "open"
        assert not store._events.connected

        fresh_redis_server.restart()  # the state is gone before any "established"
        await _until_up(store, cb.spec)
        release.set()  # now the first subscription comes up, on the empty server

        await _reseeded_and_refused(store, other_store, cb.spec, opened, _ok)
    finally:
        release.set()
        await store.aclose()
        await other_store.aclose()
