"""Hedges leak nothing: no limiter slot or reservation, no breaker probe permit, whichever
attempt is cancelled and wherever (the limiter's decision, its sleep, the breaker's decision,
the call itself), on the memory store and on a real redis-server.

The invariants are the ones of the limiter's and breaker's own cancellation tests: the log
holds exactly the calls that went on (the protected function started), and after a cancelled
probe another caller probes within 1 s although the probe lease is 30 s.
"""

from __future__ import annotations

import asyncio

import pytest

from resilience import (
    CircuitBreaker,
    Hedge,
    MemoryStore,
    Pipeline,
    RedisStore,
    SlidingWindowLimiter,
)
from resilience.stores.base import MERGE_ABOVE
from tests.test_breaker_cancellation import LEASE, probes_within, trip
from tests.test_limiter_cancellation import STEPS, cancel_after, settled

Store = MemoryStore | RedisStore
BREAK = 0.05


@pytest.fixture
def store(memory_or_redis_store: Store) -> Store:
    return memory_or_redis_store


async def test_a_hedge_waiting_for_a_permit_gives_it_back_when_the_first_attempt_wins(
    store: Store,
) -> None:
    # Limit 1 per 60 s: the first attempt takes the only slot; the hedge reserves a slot 60 s
    # ahead and sleeps. The first attempt wins: the hedge's reservation is released.
    lim = SlidingWindowLimiter(1, 60.0, store=store, name="h1", guard=0)
    ran = 0

    async def call() -> str:
        nonlocal ran
        ran += 1
        await asyncio.sleep(0.1)
        return "ok"

    p = Pipeline(Hedge(0.01, safe=True), lim)
    assert await p.call(call) == "ok"
    assert ran == 1
    assert await settled(store, ["h1"]) == [1]


async def test_every_hedge_spends_quota_and_losers_keep_what_went_on(store: Store) -> None:
    lim = SlidingWindowLimiter(100, 60.0, store=store, name="h2", guard=0)
    started: list[int] = []

    async def call() -> str:
        n = len(started)
        started.append(n)
        await asyncio.sleep(10 if n < 2 else 0)
        return f"attempt {n}"

    p = Pipeline(Hedge(0.01, max_hedges=2, safe=True), lim)
    assert await p.call(call) == "attempt 2"
    assert await settled(store, ["h2"]) == [3]  # three requests sent: three units spent


@pytest.mark.parametrize("free", [True, False], ids=["room", "full"])
async def test_a_hedged_call_cancelled_at_any_point_holds_exactly_what_went_on(
    store: Store, free: bool
) -> None:
    # With room, attempts are admitted (a decision round trip on Redis) and then hang in the
    # call; when full, every attempt sleeps in the limiter for a slot 60 s ahead. The caller
    # is cancelled after 0..15 loop steps (beyond 8: after some ms, during the sleeps).
    # (With room: MERGE_ABOVE, the largest limit whose admissions keep an entry each, which
    # a cancellation in flight gives back exactly; see test_limiter_cancellation.py.)
    name = f"h3{free}"
    lim = SlidingWindowLimiter(MERGE_ABOVE if free else 1, 60.0, store=store, name=name, guard=0)
    if not free:
        await lim.acquire()
    went_on = 0

    async def hang() -> None:
        nonlocal went_on
        went_on += 1
        await asyncio.sleep(10)

    p = Pipeline(Hedge(0.0, max_hedges=2, safe=True), lim)
    for step in STEPS:
        assert not await cancel_after(asyncio.ensure_future(p.call(hang)), step)
    expected = went_on if free else 1
    assert await settled(store, [name]) == [expected]
    if free:
        assert went_on > 0  # the test reached the call itself


async def test_a_losing_probe_returns_its_permit(store: Store) -> None:
    # Half-open, one probe permit (30 s lease). The first attempt is the probe and hangs; the
    # hedge runs an alternative outside the breaker and wins: the probe is cancelled and must
    # give its permit back, not hold it for the lease.
    cb = CircuitBreaker(1, 60, BREAK, store=store, name="hp", probe_lease=LEASE)
    await trip(cb)
    await asyncio.sleep(BREAK + 0.03)
    probe_started = asyncio.Event()

    async def hang() -> str:
        probe_started.set()
        await asyncio.sleep(10)
        return "never"

    async def secondary() -> str:
        await probe_started.wait()
        return "secondary"

    p = Pipeline(Hedge(0.005, alternative=secondary, safe=True), cb)
    assert await p.call(hang) == "secondary"
    assert probe_started.is_set()
    assert await probes_within(cb) < 1.0
    assert await cb.state() == "closed"


async def test_probes_cancelled_at_any_point_are_never_leaked(store: Store) -> None:
    cb = CircuitBreaker(
        1, 60, BREAK, store=store, name="hq", probe_lease=LEASE, half_open_max_calls=2
    )
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    p = Pipeline(Hedge(0.0, max_hedges=2, safe=True), cb)
    for step in STEPS:
        await trip(cb)
        await asyncio.sleep(BREAK + 0.03)
        assert not await cancel_after(asyncio.ensure_future(p.call(hang)), step)
        assert await probes_within(cb) < 1.0, f"a probe permit leaked at step {step}"
    assert calls > 0


async def test_the_outcome_of_a_cancelled_loser_is_not_a_failure(store: Store) -> None:
    # A loser cancelled inside the call is not counted by the breaker: 5 hedged calls whose
    # first attempt always loses leave a 2-failure breaker closed.
    cb = CircuitBreaker(2, 60, 60, store=store, name="hr")
    n = 0

    async def call() -> str:
        nonlocal n
        n += 1
        if n % 2:
            await asyncio.sleep(10)
        return "ok"

    p = Pipeline(Hedge(0.005, safe=True), cb)
    for _ in range(5):
        assert await p.call(call) == "ok"
    assert await cb.state() == "closed"
