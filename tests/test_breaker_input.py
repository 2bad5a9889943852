"""Bad breaker input (issue 12, item 7): durations too small for the store's units, and a
state the store holds that no breaker wrote. Each behaves the same on every store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilience import CircuitBreaker, CircuitOpen, MemoryStore, RedisStore
from resilience.stores.redis._keys import breaker_keys
from tests.redis_servers import RedisServer

MIN_DURATION = 0.001  # resilience.policies.breaker.MIN_DURATION
DURATIONS = ["window", "break_duration", "max_break_duration", "probe_lease"]


@pytest.mark.parametrize("param", DURATIONS)
@pytest.mark.parametrize("value", [1e-7, 4e-7, 5e-4, 0.000999])
def test_durations_below_the_minimum_are_rejected_naming_the_parameter(
    param: str, value: float
) -> None:
    kwargs: dict[str, Any] = {param: value, "store": MemoryStore()}
    if param == "max_break_duration":
        kwargs["break_duration"] = MIN_DURATION
    with pytest.raises(ValueError, match=rf"^{param} must be at least 0\.001 seconds"):
        CircuitBreaker(**kwargs)


@pytest.mark.parametrize("param", DURATIONS)
async def test_the_minimum_itself_is_accepted_and_survives_the_conversion(param: str) -> None:
    kwargs: dict[str, Any] = {param: MIN_DURATION, "store": MemoryStore()}
    if param == "max_break_duration":
        kwargs["break_duration"] = MIN_DURATION
    cb = CircuitBreaker(**kwargs)
    spec_field = {
        "window": "window_us",
        "break_duration": "break_us",
        "max_break_duration": "max_break_us",
        "probe_lease": "probe_lease_us",
    }[param]
    assert getattr(cb.spec, spec_field) == 1000


def test_the_minimum_is_exported() -> None:
    from resilience.policies.breaker import MIN_DURATION as exported

    assert exported == MIN_DURATION


async def test_open_duration_below_the_minimum_is_rejected() -> None:
    cb = CircuitBreaker(store=MemoryStore())
    with pytest.raises(ValueError, match=r"^duration must be at least 0\.001 seconds"):
        await cb.open(duration=1e-7)
    assert await cb.state() == "closed"


async def test_the_errors_are_identical_on_memory_and_redis(redis_store: RedisStore) -> None:
    cases: list[dict[str, Any]] = [
        {"probe_lease": 1e-7},
        {"window": 0.0001},
        {"break_duration": 1e-9},
        {"max_break_duration": 1e-7, "break_duration": 0.001},
        {"probe_lease": 0},
        {"window": -1},
    ]
    for kwargs in cases:
        messages = []
        for store in (MemoryStore(), redis_store):
            with pytest.raises(ValueError, match="must be") as info:
                CircuitBreaker(store=store, **kwargs)
            messages.append(str(info.value))
        assert messages[0] == messages[1], kwargs
    messages = []
    for store in (MemoryStore(), redis_store):
        cb = CircuitBreaker(store=store, name="dur")
        with pytest.raises(ValueError, match="duration") as info:
            await cb.open(duration=1e-7)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


# ---------------------------------------------------------------- an unknown stored state


@pytest.fixture(params=["memory", "redis"])
async def any_store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=2.0)
    yield store
    await store.aclose()


async def _write_state(store: Any, name: str, key: str, value: str) -> None:
    if isinstance(store, MemoryStore):
        store._breakers[(name, key)].state = value  # type: ignore[assignment]
        return
    client = aioredis.Redis(connection_pool=store.client.connection_pool)
    await client.hset(breaker_keys(store.prefix, name, key)[0], "st", value)


class Boom(Exception):
    pass


async def test_an_unknown_stored_state_reads_as_closed_with_one_warning(
    any_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resilience")
    cb = CircuitBreaker(2, 60, 30, store=any_store, name="bogus", probe_lease=30, state_refresh=0)

    async def ok() -> str:
        return "ok"

    async def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        await cb.call(boom)  # the breaker exists in the store
    await cb.reset()
    await _write_state(any_store, "bogus", "", "bogus")
    for _ in range(5):  # not wedged: every call runs
        assert await cb.call(ok) == "ok"
    assert await cb.state() == "closed"
    for _ in range(2):  # and failures count as for a closed breaker
        with pytest.raises(Boom):
            await cb.call(boom)
    with pytest.raises(CircuitOpen):
        await cb.call(ok)
    assert await cb.state() == "open"
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "unknown state 'bogus'" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
