"""Every decision path yields to the loop, the memory store's too: a tight loop of decisions
never starves the other tasks (issue 12, break 3, on the store whose decisions are local)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from resilience import CircuitBreaker, MemoryStore, Pipeline, RetryBudget, SlidingWindowLimiter


async def _max_gap_during(loop_body: Callable[[], Awaitable[object]], seconds: float) -> float:
    """Run ``loop_body`` back to back for ``seconds`` while a heartbeat ticks every 5 ms;
    return the heartbeat's largest gap."""
    gaps: list[float] = []
    stop = False

    async def heartbeat() -> None:
        last = time.monotonic()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    hb = asyncio.ensure_future(heartbeat())
    await asyncio.sleep(0.01)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and n < 2_000_000:
        await loop_body()
        n += 1
    stop = True
    await hb
    return max(gaps)


def _limiter(limit: int, store: MemoryStore | None = None) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(limit, 60.0, store=store or MemoryStore(), name="pace", guard=0)


async def _nothing() -> None:
    return None


def _policy_calls() -> Callable[[], Awaitable[object]]:
    # The limiter as a policy admits through the store's synchronous shortcut.
    return _limiter(10**9)(_nothing)


def _pipeline_calls() -> Callable[[], Awaitable[object]]:
    # Breaker and limiter on one store: two shortcut decisions per call.
    store = MemoryStore()
    return Pipeline(CircuitBreaker(store=store, name="pace"), _limiter(10**9, store))(_nothing)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _limiter(1).try_acquire, id="limiter-refusals"),
        pytest.param(lambda: _limiter(10**9).try_acquire, id="limiter-admissions"),
        pytest.param(_policy_calls, id="limiter-policy"),
        pytest.param(_pipeline_calls, id="breaker-and-limiter-pipeline"),
    ],
)
async def test_a_tight_limiter_loop_leaves_the_loop_alive(
    make: Callable[[], Callable[[], Awaitable[object]]],
) -> None:
    body = make()
    assert callable(body)
    assert await _max_gap_during(body, 0.5) < 0.1


async def test_a_tight_breaker_loop_leaves_the_loop_alive() -> None:
    br = CircuitBreaker(store=MemoryStore(), name="pace")  # state_refresh 0: a decision a call

    async def ok() -> None:
        return None

    async def body() -> None:
        await br.call(ok)

    assert await _max_gap_during(body, 0.5) < 0.1


async def test_a_tight_budget_loop_leaves_the_loop_alive() -> None:
    budget = RetryBudget(store=MemoryStore(), name="pace", min_per_second=0)

    async def body() -> None:
        await budget.withdraw()

    assert await _max_gap_during(body, 0.5) < 0.1
