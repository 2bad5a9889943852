"""CircuitBreaker policy: options, what counts as a failure, listeners, local caching, Redis
failures. (Store-level semantics: tests/conformance/test_breaker.py; multi-process claims:
tests/test_breaker_distributed.py; pybreaker: tests/test_breaker_pybreaker.py.)"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import resilience
from resilience import (
    CircuitBreaker,
    CircuitOpen,
    MemoryStore,
    Pipeline,
    RateLimited,
    RedisStore,
    StateChange,
    StoreUnavailable,
    telemetry,
)
from tests.eventually import eventually
from tests.redis_servers import RedisServer


class Upstream(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("upstream failed")
        self.retry_after = retry_after


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


async def boom() -> None:
    raise Upstream()


async def ok() -> str:
    return "ok"


async def fail_n(cb: CircuitBreaker, n: int, exc: BaseException | None = None) -> None:
    async def raiser() -> None:
        raise exc or Upstream()

    for _ in range(n):
        with pytest.raises(type(exc or Upstream())):
            await cb.call(raiser)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"window": 0}, ValueError, "window"),
        ({"window": float("inf")}, ValueError, "window"),
        ({"window": "60"}, TypeError, "window"),
        ({"break_duration": -1}, ValueError, "break_duration"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"success_threshold": 0}, ValueError, "success_threshold"),
        ({"name": ""}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"store": object()}, TypeError, "store"),
        ({"failure_on": 42}, TypeError, "failure_on"),
        ({"failure_on": int}, TypeError, "failure_on"),
        ({"failure_on": ()}, TypeError, "failure_on"),
        ({"failure_if_result": 1}, TypeError, "failure_if_result"),
        ({"key": 1}, TypeError, "key"),
        ({"max_break_duration": 10, "break_duration": 30}, ValueError, "max_break_duration"),
        ({"probe_lease": 0}, ValueError, "probe_lease"),
        ({"state_refresh": -1}, ValueError, "state_refresh"),
        ({"listeners": [1]}, TypeError, "listeners"),
        ({"listeners": "x"}, TypeError, "listeners"),
    ],
)
def test_options_are_validated_naming_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=param):
        CircuitBreaker(**kwargs)


def test_defaults_and_exports() -> None:
    cb = CircuitBreaker()
    assert (cb.failure_threshold, cb.window, cb.break_duration) == (10, 60.0, 30.0)
    assert (cb.half_open_max_calls, cb.success_threshold, cb.name) == (1, 1, "default")
    assert cb.probe_lease == 30.0
    assert cb.max_break_duration == 30.0
    from resilience.stores.memory import default_store

    assert cb.store is default_store()
    assert cb.state_refresh == 0.0  # a MemoryStore is exact, nothing to cache
    for name in ("CircuitBreaker", "PyBreakerPolicy", "StateChange", "pybreaker_policy"):
        assert name in resilience.__all__


# ---------------------------------------------------------------- what counts


async def test_default_failures_exclude_the_librarys_own_rejections() -> None:
    cb = CircuitBreaker(2, store=MemoryStore())

    async def limited() -> None:
        raise RateLimited("inner", 1.0)

    await fail_n(cb, 5, RateLimited("inner", 1.0))
    await fail_n(cb, 5, CircuitOpen("other", 1.0))
    assert await cb.state() == "closed"
    assert await cb.failures() == 0
    await fail_n(cb, 1, ValueError("bug"))
    assert await cb.failures() == 1


@pytest.mark.parametrize(
    "failure_on",
    [Upstream, (KeyError, Upstream), lambda e: isinstance(e, Upstream)],
    ids=["type", "tuple", "predicate"],
)
async def test_failure_on(failure_on: Any) -> None:
    cb = CircuitBreaker(2, store=MemoryStore(), failure_on=failure_on)
    await fail_n(cb, 3, ValueError("business error"))  # not a failure: counts as success
    assert await cb.failures() == 0
    await fail_n(cb, 2)
    assert await cb.state() == "open"


async def test_a_returned_429_counts_and_is_still_returned() -> None:
    cb = CircuitBreaker(
        2, store=MemoryStore(), failure_if_result=lambda r: getattr(r, "status", None) == 429
    )

    @cb
    async def get(status: int) -> Response:
        return Response(status)

    assert (await get(200)).status == 200
    assert (await get(429)).status == 429
    assert await cb.failures() == 1
    assert (await get(429)).status == 429
    with pytest.raises(CircuitOpen):
        await get(200)


async def test_retry_after_on_the_tripping_failure_keeps_it_open() -> None:
    cb = CircuitBreaker(2, 60, 30, store=MemoryStore())
    await fail_n(cb, 1)
    await fail_n(cb, 1, Upstream(retry_after=120))
    with pytest.raises(CircuitOpen) as info:
        await cb.call(ok)
    assert 119 < info.value.retry_after <= 120


async def test_cancellation_while_closed_is_not_a_failure() -> None:
    cb = CircuitBreaker(1, store=MemoryStore())
    t = asyncio.create_task(cb.call(asyncio.sleep, 10))
    await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert await cb.state() == "closed"
    assert await cb.failures() == 0


async def test_failed_probe_reopens_and_excluded_exception_on_probe_closes() -> None:
    cb = CircuitBreaker(1, 60, 0.05, store=MemoryStore(), failure_on=Upstream)
    await fail_n(cb, 1)
    await asyncio.sleep(0.07)
    await fail_n(cb, 1)  # the probe failed: open again
    assert await cb.state() == "open"
    await asyncio.sleep(0.07)
    await fail_n(cb, 1, ValueError("not a failure"))  # the upstream answered: healthy
    assert await cb.state() == "closed"


# ---------------------------------------------------------------- keys, listeners, ops


async def test_keys_have_separate_state() -> None:
    cb = CircuitBreaker(1, store=MemoryStore(), key=lambda host: host)

    @cb
    async def call(host: str) -> str:
        if host == "bad":
            raise Upstream()
        return host

    with pytest.raises(Upstream):
        await call("bad")
    with pytest.raises(CircuitOpen):
        await call("bad")
    assert await call("good") == "good"
    assert await cb.state("bad") == "open"
    assert await cb.state("good") == "closed"


async def test_listeners_sync_and_async_and_a_failing_one(caplog: Any) -> None:
    seen: list[StateChange] = []
    hooked: list[StateChange] = []

    async def hook(change: StateChange) -> None:
        await asyncio.sleep(0)
        hooked.append(change)

    def broken(change: StateChange) -> None:
        raise RuntimeError("listener bug")

    cb = CircuitBreaker(1, 60, 0.05, store=MemoryStore(), name="L", listeners=[seen.append, broken])
    cb.add_listener(hook)
    await fail_n(cb, 1)
    await asyncio.sleep(0.07)
    assert await cb.call(ok) == "ok"
    expected = [
        StateChange("L", "", "closed", "open"),
        StateChange("L", "", "open", "half_open"),
        StateChange("L", "", "half_open", "closed"),
    ]
    assert seen == expected
    assert hooked == expected
    assert "listener bug" in caplog.text or "failed" in caplog.text
    cb.remove_listener(hook)
    assert hook not in cb.listeners


async def test_operator_open_close_reset() -> None:
    seen: list[StateChange] = []
    cb = CircuitBreaker(3, store=MemoryStore(), listeners=[seen.append])
    await cb.open(duration=100)
    with pytest.raises(CircuitOpen) as info:
        await cb.call(ok)
    assert 99 < info.value.retry_after <= 100
    await cb.close()
    assert await cb.call(ok) == "ok"
    await fail_n(cb, 2)
    await cb.reset()
    assert await cb.failures() == 0
    assert [(c.old, c.new) for c in seen] == [("closed", "open"), ("open", "closed")]
    with pytest.raises(ValueError, match="duration"):
        await cb.open(duration=0)


async def test_pipeline_retry_breaker_counts_each_attempt() -> None:
    cb = CircuitBreaker(3, store=MemoryStore())
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise Upstream()

    p = Pipeline(cb)
    for _ in range(3):
        with pytest.raises(Upstream):
            await p.call(flaky)
    with pytest.raises(CircuitOpen):
        await p.call(flaky)
    assert calls == 3


# ---------------------------------------------------------------- telemetry


@pytest.fixture
def metrics_on() -> Iterator[None]:
    """Telemetry on (an SDK meter provider): a call that starts with telemetry off skips the
    hooks altogether (``CallContext.observed``)."""
    telemetry.configure(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    try:
        yield
    finally:
        telemetry.configure()


@pytest.mark.usefixtures("metrics_on")
async def test_telemetry_once_per_transition_and_per_call(monkeypatch: Any) -> None:
    changes: list[tuple[str, str]] = []
    calls: list[str] = []
    monkeypatch.setattr(
        "resilience.telemetry.breaker_state_change",
        lambda ctx, *, breaker, old, new: changes.append((old, new)),
    )
    monkeypatch.setattr(
        "resilience.telemetry.breaker_call",
        lambda ctx, *, breaker, outcome: calls.append(outcome),
    )
    cb = CircuitBreaker(2, 60, 0.05, store=MemoryStore())
    await cb.call(ok)
    await fail_n(cb, 2)
    with pytest.raises(CircuitOpen):
        await cb.call(ok)
    await asyncio.sleep(0.07)
    await cb.call(ok)
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert calls == ["success", "failure", "failure", "rejected", "success"]


# ---------------------------------------------------------------- property: memory model


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "cancel"]), max_size=40), st.integers(1, 6))
async def test_closed_state_counts_only_failures(ops: list[str], threshold: int) -> None:
    """Without time passing, a closed breaker opens exactly at the threshold-th failure, and
    neither successes nor cancellations change that."""
    cb = CircuitBreaker(threshold, 60, 60, store=MemoryStore())
    failures = 0
    for op in ops:
        if failures >= threshold:
            with pytest.raises(CircuitOpen):
                await cb.call(ok)
            continue
        if op == "ok":
            await cb.call(ok)
        elif op == "fail":
            await fail_n(cb, 1)
            failures += 1
        else:
            await fail_n(cb, 1, asyncio.CancelledError())
        assert await cb.state() == ("open" if failures >= threshold else "closed")


# ---------------------------------------------------------------- Redis: caching, outages


async def test_a_process_sees_a_trip_elsewhere_within_state_refresh(
    redis_server: RedisServer, prefix: str
) -> None:
    """Two breakers on two stores = two processes' views of one Redis breaker."""
    s1 = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    s2 = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    a = CircuitBreaker(2, store=s1, name="x", state_refresh=0.3)
    b = CircuitBreaker(2, store=s2, name="x", state_refresh=0.3)
    assert await b.call(ok) == "ok"  # b now believes "closed" for 0.3 s
    await fail_n(a, 2)
    with pytest.raises(CircuitOpen):
        await a.call(ok)  # the process that tripped it knows at once
    # The trip is in Redis now, and b's "closed" (read before it) is due for a refresh within
    # 0.3 s from here: b may trust it until then, never longer (+ 0.5 s of scheduling; a view
    # that never refreshed would let every call through).
    t0 = time.monotonic()
    while True:
        try:
            await b.call(ok)
        except CircuitOpen:
            break
        assert time.monotonic() - t0 < 0.3 + 0.5
        await asyncio.sleep(0.01)
    await s1.aclose()
    await s2.aclose()


async def test_successes_while_closed_and_rejections_while_open_stay_local(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    cb = CircuitBreaker(2, store=store, name="y", state_refresh=60)
    counted = {"acquire": 0, "record": 0}
    inner: Any = getattr(cb.store, "primary", cb.store)
    for op in counted:
        orig = getattr(inner, f"breaker_{op}")

        async def counting(*a: Any, _orig: Any = orig, _op: str = op) -> Any:
            counted[_op] += 1
            return await _orig(*a)

        setattr(inner, f"breaker_{op}", counting)
    for _ in range(200):
        await cb.call(ok)
    assert counted == {"acquire": 1, "record": 0}
    await fail_n(cb, 2)
    assert counted == {"acquire": 1, "record": 2}
    for _ in range(200):
        with pytest.raises(CircuitOpen):
            await cb.call(ok)
    assert counted == {"acquire": 1, "record": 2}  # the deadline came with the trip reply
    await store.aclose()


async def test_unreachable_redis_fails_fast_with_store_unavailable(prefix: str) -> None:
    server = RedisServer().start()
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=0.3)
    # state_refresh=0: every call asks the store (a cached "closed" would let calls through
    # without Redis for up to state_refresh; see the next test).
    cb = CircuitBreaker(2, store=store, name="z", fallback="deny", state_refresh=0)
    try:
        assert await cb.call(ok) == "ok"
        # Paused (SIGSTOP): connections stay open, nothing answers -> the socket timeout.
        server.signal(signal.SIGSTOP)
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await cb.state()
            assert time.monotonic() - t0 < 0.3 + 0.7  # the timeout + noise, never a hang
        # Killed: connection refused.
        server.kill()
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await cb.call(ok)
            assert time.monotonic() - t0 < 0.3 + 0.7
    finally:
        server.kill()
        await store.aclose()


async def test_record_failure_never_masks_the_calls_own_exception(prefix: str) -> None:
    server = RedisServer().start()
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=0.3)
    cb = CircuitBreaker(2, store=store, name="w", fallback="deny", state_refresh=60)
    try:
        assert await cb.call(ok) == "ok"  # closed, believed for 60 s
        server.kill()
        with pytest.raises(Upstream):  # the recording fails, the caller sees its error
            await cb.call(boom)
    finally:
        server.kill()
        await store.aclose()


async def test_cancelled_while_acquiring_returns_a_granted_probe(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    cb = CircuitBreaker(1, 60, 0.05, store=store, name="v", probe_lease=30)
    await fail_n(cb, 1)
    await asyncio.sleep(0.07)
    t = asyncio.create_task(cb.call(ok))
    await asyncio.sleep(0)  # the acquire is in flight
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t

    async def a_probe_goes_through() -> bool:  # the orphaned permit, returned in the background
        try:
            return await cb.call(ok) == "ok"
        except CircuitOpen:
            return False

    # A probe is available within seconds: not wedged for the 30 s lease.
    await eventually(a_probe_goes_through, what="the orphaned probe permit returned")
    assert await cb.state() == "closed"
    await store.aclose()
