"""Bad limiter configuration fails at once, with an error naming the parameter."""

from __future__ import annotations

import math
import os
import shutil
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import MemoryStore, SlidingWindowLimiter, all_of
from resilience.policies._validate import MAX_LIMIT, MAX_SECONDS
from tests import redis_servers

numbers = st.one_of(
    st.integers(-10, 10**6),
    st.sampled_from([MAX_LIMIT, MAX_LIMIT + 1, 2**53, 2**63 - 1, 1e-6, 5e-7, 1e-300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


def _valid_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_LIMIT


def _valid_seconds(v: object, positive: bool) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        f = float(v)
    except OverflowError:
        return False
    if not math.isfinite(f) or f > MAX_SECONDS:  # ~3 years: exact as µs in a Lua double
        return False
    return f > 0 if positive else f >= 0


@settings(max_examples=300, deadline=None)
@given(limit=numbers, window=numbers, guard=numbers, cost=numbers, timeout=numbers)
def test_construction_accepts_exactly_the_valid_configurations(
    limit: object, window: object, guard: object, cost: object, timeout: object
) -> None:
    kwargs = dict(limit=limit, window=window, guard=guard, cost=cost, timeout=timeout)
    problems = []
    if not _valid_int(limit):
        problems.append("limit")
    if not _valid_seconds(window, positive=True) or window < 1e-6:  # type: ignore[operator]
        problems.append("window")
    if guard is not None and not _valid_seconds(guard, positive=False):
        problems.append("guard")
    if not _valid_int(cost) or (_valid_int(limit) and cost > limit):  # type: ignore[operator]
        problems.append("cost")
    if timeout is not None and not _valid_seconds(timeout, positive=False):
        problems.append("timeout")
    if not problems:
        lim = SlidingWindowLimiter(store=MemoryStore(), **kwargs)  # type: ignore[arg-type]
        assert lim.limit == limit
        return
    with pytest.raises((TypeError, ValueError)) as info:
        SlidingWindowLimiter(store=MemoryStore(), **kwargs)  # type: ignore[arg-type]
    # The error names one of the bad parameters (checked in declaration order).
    assert str(info.value).split()[0] in problems


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 1000), cost=st.one_of(st.integers(-5, 2000), st.booleans()))
async def test_per_call_cost_is_checked_before_any_store_call(limit: int, cost: int) -> None:
    lim = SlidingWindowLimiter(limit, 1.0, store=MemoryStore(), guard=0)
    if _valid_int(cost) and cost <= limit:
        assert (await lim.try_acquire(cost=cost)).allowed
        return
    for call in (lim.try_acquire, lim.acquire):
        with pytest.raises((TypeError, ValueError), match="cost"):
            await call(cost=cost)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"limit": 0, "window": 1}, ValueError, "limit"),
        ({"limit": 1.5, "window": 1}, TypeError, "limit"),
        ({"limit": 2**63 - 1, "window": 1}, ValueError, "limit"),
        ({"limit": 5, "window": 5e-7, "guard": 0}, ValueError, "window"),
        ({"limit": 5, "window": 0}, ValueError, "window"),
        ({"limit": 5, "window": -1}, ValueError, "window"),
        ({"limit": 5, "window": float("inf")}, ValueError, "window"),
        ({"limit": 5, "window": 1, "cost": 6}, ValueError, "cost"),
        ({"limit": 5, "window": 1, "cost": 0}, ValueError, "cost"),
        ({"limit": 5, "window": 1, "guard": -0.1}, ValueError, "guard"),
        ({"limit": 5, "window": 1, "timeout": -1}, ValueError, "timeout"),
        ({"limit": 5, "window": 1, "name": ""}, ValueError, "name"),
        ({"limit": 5, "window": 1, "store": object()}, TypeError, "store"),
        ({"limit": 5, "window": 1, "key": 3}, TypeError, "key"),
        ({"limit": 5, "window": 1, "key": 0}, TypeError, "key"),
        ({"limit": 5, "window": 1, "key": "\udcff"}, ValueError, "key"),
        ({"limit": 5, "window": 1, "name": "\udcff"}, ValueError, "name"),
    ],
)
def test_bad_configuration_names_the_parameter(
    kwargs: dict[str, Any], exc: type[Exception], name: str
) -> None:
    with pytest.raises(exc, match=name):
        SlidingWindowLimiter(**kwargs)


async def test_acquire_timeout_and_penalize_seconds_are_checked() -> None:
    lim = SlidingWindowLimiter(5, 1.0, store=MemoryStore())
    with pytest.raises(ValueError, match="timeout"):
        await lim.acquire(timeout=-1)
    with pytest.raises(ValueError, match="seconds"):
        await lim.penalize(float("nan"))


def test_decorating_a_sync_function_is_a_type_error() -> None:
    lim = SlidingWindowLimiter(5, 1.0, store=MemoryStore())
    with pytest.raises(TypeError, match="async"):

        @lim  # type: ignore[arg-type]
        def sync() -> None:  # pragma: no cover - never called
            pass


async def test_decorator_takes_one_permit_per_call() -> None:
    lim = SlidingWindowLimiter(2, 5.0, store=MemoryStore(), timeout=0)

    @lim
    async def f(x: int) -> int:
        return x * 2

    assert [await f(1), await f(2)] == [2, 4]
    from resilience import RateLimited

    with pytest.raises(RateLimited):
        await f(3)


def test_all_of_checks_its_limiters() -> None:
    a = SlidingWindowLimiter(5, 1.0, store=MemoryStore(), name="a")
    with pytest.raises(ValueError, match="limiters"):
        all_of()
    with pytest.raises(ValueError, match="same store"):
        all_of(a, SlidingWindowLimiter(5, 1.0, store=MemoryStore(), name="b"))
    with pytest.raises(ValueError, match="distinct names"):
        all_of(a, SlidingWindowLimiter(5, 1.0, store=a.store, name="a"))
    with pytest.raises(TypeError, match="limiters"):
        all_of(a, object())  # type: ignore[arg-type]


# The fixture layer: a missing redis-server fails the run under CI and skips locally.


def test_missing_redis_server_skips_locally_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        redis_servers.require_redis_server()


def test_missing_redis_server_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server not found"):
        redis_servers.require_redis_server()


def test_present_redis_server_is_found() -> None:
    if os.environ.get("CI") != "true" and not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    assert redis_servers.require_redis_server().endswith("redis-server")
