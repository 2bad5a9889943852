"""The adaptive latency guard (``guard=None``): it follows the time from admission to answer,
so cold clients whose first requests land late do not draw 429s when their slots are reused."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience import MemoryStore, SlidingWindowLimiter, all_of
from resilience.policies.ratelimit._guard import DEFAULT_GUARD, MAX_AUTO_GUARD, AutoGuard


class StrictUpstream:
    """Counts arrivals in an exact rolling window on the monotonic clock; refuses beyond."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.arrivals: deque[float] = deque()
        self.refused = 0

    def arrive(self) -> bool:
        now = time.monotonic()
        while self.arrivals and self.arrivals[0] <= now - self.window:
            self.arrivals.popleft()
        if len(self.arrivals) >= self.limit:
            self.refused += 1
            return False
        self.arrivals.append(now)
        return True


async def _cold_fleet(guard: float | None) -> int:
    # Limit 5 per 2 s; 10 calls at once. The first five are "cold": they reach the upstream
    # 0.3 s after admission (a new SDK client's start-up), the next five at once. The second
    # five reuse the first five's slots one window later.
    upstream = StrictUpstream(5, 2.0)
    lim = SlidingWindowLimiter(5, 2.0, store=MemoryStore(), name="cold", guard=guard)
    cold = iter(range(5))

    @lim
    async def call() -> None:
        if next(cold, None) is not None:
            await asyncio.sleep(0.3)
        upstream.arrive()
        await asyncio.sleep(0.01)  # the answer

    await asyncio.gather(*[call() for _ in range(10)])
    return upstream.refused


async def test_the_adaptive_guard_holds_for_cold_clients() -> None:
    assert await _cold_fleet(guard=None) == 0


async def test_a_fixed_guard_does_not_hold_for_cold_clients() -> None:
    # The control: the same fleet with the guard fixed at 0.15 s draws refusals.
    assert await _cold_fleet(guard=DEFAULT_GUARD) > 0


async def test_the_guard_follows_slow_answers_up_to_its_cap() -> None:
    lim = SlidingWindowLimiter(100, 2.0, store=MemoryStore(), name="follow")
    assert lim.current_guard == pytest.approx(DEFAULT_GUARD)

    @lim
    async def call(seconds: float) -> None:
        await asyncio.sleep(seconds)

    await call(0.3)
    assert 0.3 <= lim.current_guard < 0.4
    await call(0.9)  # beyond the cap: a quarter of the window
    assert lim.current_guard == pytest.approx(0.5)
    fixed = SlidingWindowLimiter(100, 2.0, store=MemoryStore(), name="fixed", guard=0.15)
    await fixed(call.__wrapped__)(0.3)  # type: ignore[attr-defined]
    assert fixed.current_guard == pytest.approx(0.15)


async def test_failed_calls_are_answers_too() -> None:
    lim = SlidingWindowLimiter(100, 2.0, store=MemoryStore(), name="failed")

    @lim
    async def call() -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("502")

    with pytest.raises(RuntimeError):
        await call()
    assert lim.current_guard >= 0.3


async def test_all_of_adapts_only_its_adaptive_members() -> None:
    store = MemoryStore()
    auto = SlidingWindowLimiter(100, 2.0, store=store, name="auto")
    fixed = SlidingWindowLimiter(100, 2.0, store=store, name="fixed", guard=0.1)
    both = all_of(auto, fixed)

    @both
    async def call() -> None:
        await asyncio.sleep(0.3)

    await call()
    windows = {lim.name: lim.window_us for lim in both._limits}
    assert windows["fixed"] == 2_100_000
    assert 2_300_000 <= windows["auto"] < 2_400_000
    assert auto.current_guard == pytest.approx(DEFAULT_GUARD)  # the member itself: untouched


@given(
    window=st.floats(0.01, 600),
    answers=st.lists(st.tuples(st.floats(0, 30), st.floats(0, 50)), max_size=30),
)
def test_the_guard_stays_between_its_floor_and_cap(
    window: float, answers: list[tuple[float, float]]
) -> None:
    g = AutoGuard(DEFAULT_GUARD, window)
    cap = max(DEFAULT_GUARD, min(MAX_AUTO_GUARD, window / 4))
    now = 0.0
    for seconds, later in answers:
        now += later
        g.observe(seconds, now)
        assert DEFAULT_GUARD <= g.applied <= cap
        assert DEFAULT_GUARD <= g.current(now) <= cap


def test_a_peak_holds_two_windows_then_decays_to_the_floor() -> None:
    g = AutoGuard(0.15, 2.0)
    assert g.observe(0.4, now=0.0) == pytest.approx(0.4)
    assert g.current(3.9) == pytest.approx(0.4)  # held for two windows
    assert g.current(6.0) == pytest.approx(0.2)  # then halved per window
    assert g.refresh(100.0) == pytest.approx(0.15)
    assert g.applied == 0.15
