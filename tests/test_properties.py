"""Hostile configuration values, costs and header values: every input either works or raises a
ValueError / TypeError naming the parameter; nothing hangs or corrupts shared state."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import CircuitBreaker, MemoryStore, SlidingWindowLimiter
from resilience.stores import FallbackStore, check_fallback

ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(max_value=1e12, min_value=-1e12),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.text(max_size=20),
    st.sampled_from(["local", "allow", "deny", "LOCAL", "", "10", 1.5, [], {}, object()]),
)

LIMITER_PARAMS = ["limit", "window", "guard", "name", "timeout", "fallback", "cost", "merge"]
BREAKER_PARAMS = [
    "failure_threshold",
    "window",
    "break_duration",
    "name",
    "half_open_max_calls",
    "success_threshold",
    "max_break_duration",
    "probe_lease",
    "state_refresh",
    "fallback",
]


def _check(exc: BaseException, param: str) -> None:
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)
    assert param in str(exc), f"{param!r} not named in {exc!r}"


@settings(max_examples=300)
@given(param=st.sampled_from(LIMITER_PARAMS), value=ANY)
def test_limiter_options(param: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"limit": 10, "window": 1.0, "store": MemoryStore()}
    kwargs[param] = value
    try:
        lim = SlidingWindowLimiter(**kwargs)
    except Exception as exc:
        _check(exc, param)
        return
    assert lim.limit >= 1
    assert lim.window > 0
    assert math.isfinite(lim.window)


@settings(max_examples=300)
@given(param=st.sampled_from(BREAKER_PARAMS), value=ANY)
def test_breaker_options(param: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"store": MemoryStore()}
    kwargs[param] = value
    try:
        CircuitBreaker(**kwargs)
    except Exception as exc:
        _check(exc, param)


@pytest.mark.parametrize("value", [1.797693134862316e302, 1e15, 10**400])
async def test_huge_durations_rejected_at_construction(value: float) -> None:
    for cls, param in ((SlidingWindowLimiter, "window"), (CircuitBreaker, "break_duration")):
        kwargs: dict[str, Any] = {"store": MemoryStore(), param: value}
        if cls is SlidingWindowLimiter:
            kwargs["limit"] = 1
        with pytest.raises(ValueError, match=param):
            cls(**kwargs)


@given(value=ANY)
def test_fallback_modes_are_the_contract(value: Any) -> None:
    try:
        mode = check_fallback(value)
    except Exception as exc:
        _check(exc, "fallback")
        assert value not in ("local", "allow", "deny")
    else:
        assert mode in ("local", "allow", "deny")
        assert mode == value


@settings(max_examples=200, deadline=None)
@given(costs=st.lists(ANY, min_size=1, max_size=8))
async def test_costs_never_corrupt_the_quota(costs: list[Any]) -> None:
    """Whatever costs are thrown at it, the log admits at most ``limit`` units in total, and
    invalid costs are refused up front (naming ``cost``) without touching the state."""
    lim = SlidingWindowLimiter(10, 60.0, store=MemoryStore(), guard=0)
    admitted = 0
    for c in costs:
        try:
            d = await lim.try_acquire(cost=c)
        except Exception as exc:
            _check(exc, "cost")
            continue
        if d.allowed:
            admitted += c.get("default", 1) if isinstance(c, dict) else c
        assert 0 <= d.remaining <= 10
    assert admitted <= 10
    # What is left is exactly what was not admitted.
    left = 10 - admitted
    if left:
        assert (await lim.try_acquire(cost=left)).allowed
    assert not (await lim.try_acquire()).allowed


@given(interval=ANY)
def test_fallback_store_options(interval: Any) -> None:
    try:
        FallbackStore(MemoryStore(), "local", presence_interval=interval)
    except Exception as exc:
        _check(exc, "presence_interval")


headers_mod = pytest.importorskip("resilience.http")

HEADER_TEXT = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]+)?", fullmatch=True),
    st.sampled_from(
        [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            '"default";r=0;t=30',
            '"a";r=0;t=99999999999999999999, "b";r=0;t=5',
            "r=0;t=-1",
            "\x00",
            "9" * 400,
        ]
    ),
)


@settings(max_examples=400)
@given(
    retry_after=st.one_of(st.none(), HEADER_TEXT),
    ratelimit=st.one_of(st.none(), HEADER_TEXT),
    reset=st.one_of(st.none(), HEADER_TEXT),
    remaining=st.one_of(st.none(), HEADER_TEXT),
    max_delay=st.floats(min_value=0, max_value=1e7),
)
def test_header_hints_are_bounded(
    retry_after: str | None,
    ratelimit: str | None,
    reset: str | None,
    remaining: str | None,
    max_delay: float,
) -> None:
    """Every hint is None or a finite number of seconds in [0, max_delay]; nothing raises."""
    h = headers_mod.parse_retry_after(retry_after, max_delay=max_delay)
    assert h is None or (math.isfinite(h) and 0 <= h <= max_delay)
    headers = {
        k: v
        for k, v in {
            "Retry-After": retry_after,
            "RateLimit": ratelimit,
            "X-RateLimit-Reset": reset,
            "X-RateLimit-Remaining": remaining,
        }.items()
        if v is not None
    }
    for fn in (headers_mod.parse_ratelimit, headers_mod.retry_after_hint):
        v = fn(headers, max_delay=max_delay)
        assert v is None or (math.isfinite(v) and 0 <= v <= max_delay)
