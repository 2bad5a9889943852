"""pybreaker interop: an existing ``pybreaker.CircuitBreaker`` as a pipeline policy."""

from __future__ import annotations

import asyncio
from typing import Any

import pybreaker
import pytest
import redis

from resilience import (
    CircuitOpen,
    Pipeline,
    PyBreakerPolicy,
    RateLimited,
    pybreaker_policy,
)
from tests.redis_servers import RedisServer


class Upstream(Exception):
    pass


async def boom() -> None:
    await asyncio.sleep(0)
    raise Upstream()


async def ok() -> str:
    await asyncio.sleep(0)
    return "ok"


async def test_pybreakers_own_decorator_misses_failures_raised_on_await() -> None:
    """Why the adapter exists: pybreaker's decorator only *creates* the coroutine."""
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    wrapped = cb(boom)
    for _ in range(5):
        with pytest.raises(Upstream):
            await wrapped()
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


async def test_failures_raised_on_await_are_counted_and_trip() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60)
    policy = PyBreakerPolicy(cb)
    for _ in range(2):
        with pytest.raises(Upstream):
            await policy.call(boom)
    assert cb.fail_counter == 2
    with pytest.raises(pybreaker.CircuitBreakerError):  # pybreaker's "threshold reached"
        await policy.call(boom)
    assert cb.current_state == "open"
    with pytest.raises(CircuitOpen) as info:
        await policy.call(ok)
    assert isinstance(info.value, pybreaker.CircuitBreakerError)  # both except clauses work
    assert 59 < info.value.retry_after <= 60
    assert info.value.name == "pybreaker"


async def test_success_resets_pybreakers_consecutive_counter() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60)
    policy = pybreaker_policy(cb, name="pb")
    assert policy.name == "pb"
    for _ in range(2):
        with pytest.raises(Upstream):
            await policy.call(boom)
    assert await policy.call(ok) == "ok"
    assert cb.fail_counter == 0  # pybreaker's semantics, preserved


async def test_cancellation_and_own_rejections_are_not_counted() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    policy = PyBreakerPolicy(cb)
    t = asyncio.create_task(policy.call(asyncio.sleep, 10))
    await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t

    async def limited() -> None:
        raise RateLimited("inner", 1.0)

    with pytest.raises(RateLimited):
        await policy.call(limited)
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


async def test_excluded_exceptions_follow_pybreaker() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, exclude=[KeyError])

    async def missing() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await PyBreakerPolicy(cb).call(missing)
    assert cb.current_state == "closed"


async def test_half_open_lets_one_trial_through_per_process() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05)
    policy = PyBreakerPolicy(cb)
    with pytest.raises(pybreaker.CircuitBreakerError):
        await policy.call(boom)
    await asyncio.sleep(0.07)
    ran = 0

    async def trial() -> str:
        nonlocal ran
        ran += 1
        await asyncio.sleep(0.05)
        return "ok"

    res = await asyncio.gather(*[policy.call(trial) for _ in range(10)], return_exceptions=True)
    assert ran == 1
    assert sum(isinstance(r, CircuitOpen) for r in res) == 9
    assert cb.current_state == "closed"
    assert await policy.call(ok) == "ok"


async def test_an_outcome_that_raced_the_trip_is_returned_uncounted() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    policy = PyBreakerPolicy(cb)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "late"

    t = asyncio.create_task(policy.call(slow))
    await asyncio.sleep(0.01)
    with pytest.raises(pybreaker.CircuitBreakerError):
        await policy.call(boom)  # trips while `slow` runs
    gate.set()
    assert await t == "late"
    assert cb.current_state == "open"


async def test_state_changes_reach_telemetry(monkeypatch: Any) -> None:
    seen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        "resilience.telemetry.breaker_state_change",
        lambda ctx, *, breaker, old, new: seen.append((breaker, old, new)),
    )
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05, name="up")
    policy = PyBreakerPolicy(cb)
    with pytest.raises(pybreaker.CircuitBreakerError):
        await policy.call(boom)
    await asyncio.sleep(0.07)
    await policy.call(ok)
    assert seen == [
        ("up", "closed", "open"),
        ("up", "open", "half_open"),
        ("up", "half_open", "closed"),
    ]


async def test_in_a_pipeline_with_redis_storage(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace="pbtest")
        cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, state_storage=storage)
        pipeline = Pipeline(PyBreakerPolicy(cb))
        with pytest.raises(Upstream):
            await pipeline.call(boom)
        with pytest.raises(pybreaker.CircuitBreakerError):
            await pipeline.call(boom)
        with pytest.raises(CircuitOpen):
            await pipeline.call(ok)
        assert client.get("pbtest:pybreaker:state") == b"open"
    finally:
        client.close()


def test_rejects_what_is_not_a_pybreaker() -> None:
    with pytest.raises(TypeError, match="breaker"):
        PyBreakerPolicy(object())
