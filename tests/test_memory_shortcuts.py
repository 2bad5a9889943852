"""The memory store's synchronous shortcuts (issue 13, the hot path).

``MemoryStore.window_admit`` and ``MemoryStore.breaker_admit`` take the commonest decision of a
rate limiter and of a closed breaker without a coroutine. They must decide exactly as the
protocol's coroutines do, count toward the store's pace (a tight loop still yields to the event
loop), and be used only when the store itself offers them (``local_shortcut``): a wrapper that
forwards attributes to a memory store must not have its own operations bypassed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import NoOpTracerProvider

from resilience import (
    CallContext,
    CircuitBreaker,
    CircuitOpen,
    FallbackStore,
    MemoryStore,
    Pipeline,
    RateLimited,
    SlidingWindowLimiter,
    telemetry,
)
from resilience.policies._validate import local_shortcut
from resilience.stores.base import BreakerSpec, WindowLimit
from resilience.stores.memory._core import PACE
from resilience.testing import FakeClock

RPS = WindowLimit("rps", 5, 1_000_000)  # 5 per second
TP2S = WindowLimit("tp2s", 12, 2_000_000)  # 12 units per 2 seconds
FOREVER = 10**15

# One policy call: (advance the clock by µs, cost of RPS, cost of TP2S or None, max wait µs);
# or return a reservation (a cancelled waiter); or a penalty (µs).
_call = st.tuples(
    st.just("call"),
    st.integers(0, 400_000),
    st.integers(1, 5),
    st.one_of(st.none(), st.integers(1, 12)),
    st.sampled_from([0, 300_000, FOREVER]),
)
_release = st.tuples(st.just("release"), st.integers(0, 50), st.just(0), st.none(), st.just(0))
_penalty = st.tuples(
    st.just("penalize"), st.integers(0, 50), st.integers(1, 1_500_000), st.none(), st.just(0)
)


def _live(store: MemoryStore) -> dict[tuple[str, str], tuple[list[int], list[int], int, int]]:
    """Each log's live entries (times, weights), total and penalty: what decisions read."""
    return {
        k: (log.at[log.head :], log.weights[log.head :], log.total, log.penalty)
        for k, log in store._logs.items()
    }


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.one_of(_call, _release, _penalty), min_size=1, max_size=60))
async def test_window_admit_decides_as_window_acquire_does(
    ops: list[tuple[str, int, int, int | None, int]],
) -> None:
    # Two stores on one clock: one answers the way the limiter policy asks it (the shortcut
    # first; the coroutine when the shortcut says "not now"), the other with the protocol's
    # coroutine only. Same decisions, same waits, same logs.
    clock = FakeClock(1000.0)
    fast = MemoryStore(clock=clock)
    reference = MemoryStore(clock=clock)
    reserved: list[tuple[tuple[WindowLimit, ...], tuple[int, ...], str, str]] = []
    for kind, a, b, c, max_wait in ops:
        if kind == "release":
            if reserved:
                limits, costs, tf, tr = reserved.pop(a % len(reserved))
                await fast.window_release(limits, "k", costs, tf)
                await reference.window_release(limits, "k", costs, tr)
        elif kind == "penalize":
            await fast.window_penalize((RPS, TP2S), "k", b)
            await reference.window_penalize((RPS, TP2S), "k", b)
        else:
            clock.advance(a / 1e6)
            limits, costs = ((RPS,), (b,)) if c is None else ((RPS, TP2S), (b, c))
            admitted = fast.window_admit(limits, "k", costs)
            if admitted is None:  # the pace turn: the policy yields, then asks again
                admitted = fast.window_admit(limits, "k", costs)
            ref = await reference.window_acquire(limits, "k", costs, max_wait)
            if admitted:
                assert (ref.allowed, ref.wait_us) == (True, 0)
            else:
                got = await fast.window_acquire(limits, "k", costs, max_wait)
                assert (got.allowed, got.wait_us) == (ref.allowed, ref.wait_us)
                assert not (ref.allowed and ref.wait_us == 0), "the shortcut refused a free slot"
                if got.allowed:
                    reserved.append((limits, costs, got.token, ref.token))
        assert _live(fast) == _live(reference)


async def test_window_admit_records_an_entry_nobody_can_release() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    assert store.window_admit((RPS,), "k", (5,)) is True
    await store.window_release((RPS,), "k", (5,), "")  # no token: nothing to release
    assert store.window_admit((RPS,), "k", (1,)) is False  # still full
    got = await store.window_acquire((RPS,), "k", (1,), -1)
    assert not got.allowed
    assert got.wait_us == 1_000_000


async def test_window_admit_refuses_a_wait_and_a_penalty_without_recording() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for _ in range(5):
        assert store.window_admit((RPS,), "k", (1,)) is True
    before = _live(store)
    assert store.window_admit((RPS,), "k", (1,)) is False  # would wait
    assert _live(store) == before
    clock.advance(1.0)
    await store.window_penalize((RPS,), "k", 500_000)
    assert store.window_admit((RPS,), "k", (1,)) is False  # paused
    clock.advance(0.5)
    assert store.window_admit((RPS,), "k", (1,)) is True


async def test_the_shortcuts_take_their_turn_at_the_pace() -> None:
    # Every PACE-th decision of a store yields to the loop first. window_admit says so
    # (None) and counts the turn; a refusal counts nothing.
    store = MemoryStore(clock=FakeClock())
    big = WindowLimit("big", 10**6, 1_000_000)
    answers = [store.window_admit((big,), "k", (1,)) for _ in range(PACE)]
    assert answers == [True] * (PACE - 1) + [None]
    assert store.window_admit((big,), "k", (1,)) is True  # the next cycle starts
    full = WindowLimit("full", 1, 10**9)
    assert store.window_admit((full,), "k", (1,)) is True
    for _ in range(3 * PACE):
        assert store.window_admit((full,), "k", (1,)) is False  # refused: not counted
    answers = [store.window_admit((big,), "k", (1,)) for _ in range(PACE)]
    assert answers.index(None) == PACE - 3  # two decisions (True, True) were counted above

    # breaker_admit leaves the turn to breaker_acquire, which yields: it answers None (and
    # counts nothing) until a coroutine took the turn.
    spec = CircuitBreaker(store=store, name="pace").spec
    await store.breaker_acquire(spec, "k")
    gens = [store.breaker_admit(spec, "k") for _ in range(2 * PACE)]
    assert None in gens
    first = gens.index(None)
    assert all(g == 0 for g in gens[:first])
    assert all(g is None for g in gens[first:])
    await store.breaker_acquire(spec, "k")
    assert store.breaker_admit(spec, "k") == 0


async def test_breaker_admit_admits_a_closed_breaker_only() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    cb = CircuitBreaker(1, 60, 1.0, store=store, name="adm")
    spec: BreakerSpec = cb.spec
    assert store.breaker_admit(spec, "k") is None  # not known yet: ask breaker_acquire
    reply = await store.breaker_acquire(spec, "k")
    assert store.breaker_admit(spec, "k") == reply.gen
    await store.breaker_record(spec, "k", "fail", reply.gen, "", 0)  # trips (threshold 1)
    assert store.breaker_admit(spec, "k") is None  # open
    clock.advance(1.0)
    assert store.breaker_admit(spec, "k") is None  # the break is over: probes are per call
    probe = await store.breaker_acquire(spec, "k")
    assert probe.permit == "probe"
    assert store.breaker_admit(spec, "k") is None  # half-open
    closed = await store.breaker_record(spec, "k", "ok", probe.gen, probe.token, 0)
    assert closed.state == "closed"
    assert store.breaker_admit(spec, "k") == closed.gen > reply.gen


class Forwarding:
    """A store wrapper that counts the operations it sees and forwards the rest."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.seen: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def window_acquire(self, *args: Any) -> Any:
        self.seen.append("window_acquire")
        return await self.inner.window_acquire(*args)

    async def breaker_acquire(self, *args: Any) -> Any:
        self.seen.append("breaker_acquire")
        return await self.inner.breaker_acquire(*args)


def test_local_shortcut_is_the_stores_own_method_only() -> None:
    store = MemoryStore()
    assert local_shortcut(store, "window_admit") == store.window_admit
    assert local_shortcut(store, "breaker_admit") == store.breaker_admit
    assert local_shortcut(store, "no_such_method") is None
    assert local_shortcut(Forwarding(store), "window_admit") is None  # would bypass it
    assert local_shortcut(FallbackStore(store), "window_admit") is None

    class Remote:
        decides_locally = False

        def window_admit(self) -> bool:
            return True

    assert local_shortcut(Remote(), "window_admit") is None


async def test_a_forwarding_wrapper_sees_every_decision() -> None:
    wrapper = Forwarding(MemoryStore())
    breaker = CircuitBreaker(store=wrapper, name="fw")
    limiter = SlidingWindowLimiter(100, 60, store=wrapper, name="fw", guard=0)

    @Pipeline(breaker, limiter)
    async def work() -> int:
        return 1

    for _ in range(10):
        assert await work() == 1
    assert wrapper.seen.count("window_acquire") == 10
    assert wrapper.seen.count("breaker_acquire") == 10


async def test_the_fast_path_counts_exactly_and_trips_the_breaker() -> None:
    # Breaker and limiter on one memory store, telemetry off: every call takes the shortcuts,
    # and the quota and the failure count are exact.
    clock = FakeClock(50.0)
    store = MemoryStore(clock=clock)
    breaker = CircuitBreaker(2, 60, 30, store=store, name="exact")
    limiter = SlidingWindowLimiter(3, 1.0, store=store, name="exact", guard=0, timeout=0)
    fail = False

    @Pipeline(breaker, limiter)
    async def work() -> str:
        if fail:
            raise ConnectionError("down")
        return "ok"

    assert [await work() for _ in range(3)] == ["ok"] * 3
    with pytest.raises(RateLimited) as info:
        await work()
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    assert [await work() for _ in range(3)] == ["ok"] * 3
    clock.advance(1.0)
    fail = True
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await work()
    with pytest.raises(CircuitOpen):
        await work()


async def test_a_call_decides_telemetry_once() -> None:
    seen: list[bool] = []

    class Spy:
        async def execute(self, call: Callable[[], Awaitable[Any]], ctx: CallContext) -> Any:
            seen.append(ctx.observed)
            return await call()

    @Pipeline(Spy(), Spy())
    async def work() -> int:
        return 1

    telemetry.configure(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    try:
        assert not telemetry.enabled()
        await work()
        assert seen == [False, False]
        telemetry.configure(
            tracer_provider=NoOpTracerProvider(),
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        )
        assert telemetry.enabled()
        await work()
        assert seen == [False, False, True, True]
    finally:
        telemetry.configure()
    assert CallContext("by hand").observed  # a context made by hand: each hook asks


async def test_a_limiter_call_yields_at_the_stores_pace() -> None:
    # The shortcut's pace turn: the policy itself yields, so other tasks run.
    store = MemoryStore()
    limiter = SlidingWindowLimiter(10**9, 60, store=store, name="yield", guard=0)
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    @limiter
    async def work() -> None:
        return None

    t = asyncio.ensure_future(other())
    await asyncio.sleep(0)
    start = ticks
    for _ in range(10 * PACE):
        await work()
    t.cancel()
    assert ticks - start >= 9
