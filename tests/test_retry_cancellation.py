"""Cancellation at every await of a retried call: never retried, never a failure, and the retry
budget's books stay exact (each request deposited once, each granted retry counted once and
used at most once).

The awaits of ``Retry`` with a budget: the first attempt, the budget withdrawal (a store round
trip), the backoff sleep, the later attempts; and the budget's own flush. Each is cancelled
here, on a MemoryStore and on a real redis-server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from resilience import MemoryStore, RedisStore, Retry, RetryBudget, StoreUnavailable, backoff
from resilience.policies.retry import _retry as retry_module
from resilience.policies.retry._budget import WINDOW
from resilience.stores.base import BudgetResult
from tests.redis_servers import RedisServer

ZERO = backoff.constant(0)


@pytest.fixture
def store(memory_or_redis_store: Any) -> Any:
    """The budget's store: in process, or a real redis-server."""
    return memory_or_redis_store


async def counts(store: Any, name: str = "b") -> tuple[int, int]:
    """(requests, retries) the store counts for budget ``name`` (a read: ratio 0 and no floor
    grant nothing, and a refusal without deposits changes nothing)."""
    r = await store.budget_withdraw(name, 0, 0, 0, WINDOW)
    assert not r.allowed
    return r.requests, r.retries


class Upstream:
    """An always-failing upstream whose attempts can be made to hang (to cancel them)."""

    def __init__(self, *, hang_on: int = 0, fail_first: int = 10**9) -> None:
        self.calls = 0
        self.hang_on = hang_on
        self.fail_first = fail_first
        self.entered = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls == self.hang_on:
            self.entered.set()
            await asyncio.sleep(3600)
        if self.calls <= self.fail_first:
            raise ConnectionError("upstream down")
        return "ok"


async def cancel_when(task: asyncio.Task[Any], ready: Callable[[], bool]) -> None:
    """Cancel ``task`` as soon as ``ready()`` holds (bounded), and check it was cancelled."""
    for _ in range(2000):
        if ready():
            break
        await asyncio.sleep(0.001)
    else:
        raise AssertionError("the task never reached the await to cancel")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def no_give_up(caplog: pytest.LogCaptureFixture) -> None:
    """A cancellation is not a failure: the retrier never logged giving up."""
    assert not [r for r in caplog.records if "gave up" in r.getMessage()]


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="resilience")


# ---------------------------------------------------------------- the attempts


# With a deadline, attempts run bounded (cancelled at the deadline, which then raises
# TimeoutError): an outside cancellation must still surface as CancelledError, not a timeout.
DEADLINES = pytest.mark.parametrize("deadline", [None, 30.0], ids=["no-deadline", "deadline"])


@DEADLINES
async def test_cancel_in_the_first_attempt(
    store: Any, caplog: pytest.LogCaptureFixture, deadline: float | None
) -> None:
    budget = RetryBudget(0, 1, store=store, name="b")
    up = Upstream(hang_on=1)
    retry = Retry(3, backoff=ZERO, budget=budget, deadline=deadline)
    task = asyncio.ensure_future(retry.call(up))
    await cancel_when(task, up.entered.is_set)
    assert up.calls == 1  # not retried
    await budget.flush()
    assert await counts(store) == (1, 0)  # the request counted, no retry
    assert budget.credits == 0
    no_give_up(caplog)


@DEADLINES
async def test_cancel_in_a_retry_attempt(
    store: Any, caplog: pytest.LogCaptureFixture, deadline: float | None
) -> None:
    budget = RetryBudget(0, 1, store=store, name="b")
    up = Upstream(hang_on=2)
    retry = Retry(3, backoff=ZERO, budget=budget, deadline=deadline)
    task = asyncio.ensure_future(retry.call(up))
    await cancel_when(task, up.entered.is_set)
    assert up.calls == 2  # the cancelled retry is not retried
    # The retry did start: its withdrawal is used, not given back.
    assert await counts(store) == (1, 1)
    assert budget.credits == 0
    no_give_up(caplog)


# ---------------------------------------------------------------- the backoff sleep


async def test_cancel_in_the_backoff_sleep_gives_the_retry_back(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    budget = RetryBudget(0, 1, store=store, name="b")
    up = Upstream()
    task = asyncio.ensure_future(Retry(3, backoff=backoff.constant(30), budget=budget).call(up))
    # Logged after the withdrawal, right before the sleep: the next await is the sleep.
    await cancel_when(task, lambda: any("retrying in" in r.getMessage() for r in caplog.records))
    assert up.calls == 1
    assert await counts(store) == (1, 1)  # granted (and counted) before the sleep...
    no_give_up(caplog)
    # ...and given back, as the retry never ran: the next retry uses it, and the store counts
    # exactly one grant for the one retry that ran.
    up2 = Upstream(fail_first=1)
    assert await Retry(3, backoff=ZERO, budget=budget).call(up2) == "ok"
    assert up2.calls == 2
    await budget.flush()
    assert await counts(store) == (2, 1)
    assert budget.credits == 0


async def test_deadline_passed_in_the_sleep_gives_the_retry_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The retrier's clock jumps while the withdrawal runs: after the sleep the deadline has
    # passed, so the granted retry never starts and is given back.
    jump = [0.0]
    monkeypatch.setattr(retry_module, "_monotonic", lambda: time.monotonic() + jump[0])
    store = MemoryStore()

    class Jumping:
        label = "jumping"

        async def budget_deposit(self, *args: Any) -> None:
            await store.budget_deposit(*args)

        async def budget_withdraw(self, *args: Any) -> BudgetResult:
            jump[0] = 100.0
            return await store.budget_withdraw(*args)

    budget = RetryBudget(0, 1, store=Jumping(), name="b")  # type: ignore[arg-type]
    up = Upstream()
    with pytest.raises(ConnectionError) as info:
        await Retry(3, backoff=backoff.constant(0.001), deadline=5, budget=budget).call(up)
    assert "deadline" in "".join(getattr(info.value, "__notes__", []))
    assert up.calls == 1
    assert await counts(store) == (1, 1)
    # The unused grant serves the next retry: one grant counted for the one retry that ran.
    up2 = Upstream(fail_first=1)
    assert await Retry(3, backoff=ZERO, budget=budget).call(up2) == "ok"
    await budget.flush()
    assert await counts(store) == (2, 1)


# ---------------------------------------------------------------- the withdrawal round trip


class GatedStore:
    """A MemoryStore whose budget round trips wait for ``gate`` (then may fail)."""

    label = "gated"

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.fail = False
        self.done = 0

    async def _pass(self) -> None:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        if self.fail:
            self.done += 1
            raise StoreUnavailable("gone")

    async def budget_deposit(self, *args: Any) -> None:
        await self._pass()
        await self.inner.budget_deposit(*args)
        self.done += 1

    async def budget_withdraw(self, *args: Any) -> BudgetResult:
        await self._pass()
        r = await self.inner.budget_withdraw(*args)
        self.done += 1
        return r


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_cancel_in_the_withdrawal_books_it_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gated = GatedStore()
    budget = RetryBudget(0, 1, store=gated, name="b")  # type: ignore[arg-type]
    up = Upstream()
    task = asyncio.ensure_future(Retry(3, backoff=ZERO, budget=budget).call(up))
    await cancel_when(task, lambda: gated.waiting == 1)
    assert up.calls == 1  # not retried
    no_give_up(caplog)
    # The round trip was not cut: it ends, carrying the deposit once, and its grant (the
    # caller is gone) becomes a credit.
    gated.gate.set()
    await _until(lambda: gated.done == 1)
    await asyncio.sleep(0)
    assert await counts(gated.inner) == (1, 1)
    assert budget.pending == 0
    assert budget.credits == 1
    up2 = Upstream(fail_first=1)
    assert await Retry(3, backoff=ZERO, budget=budget).call(up2) == "ok"
    await budget.flush()
    assert await counts(gated.inner) == (2, 1)  # the credit served the next retry


async def test_cancel_in_a_withdrawal_that_then_fails_keeps_the_deposits() -> None:
    gated = GatedStore()
    gated.fail = True
    budget = RetryBudget(0, 1, store=gated, name="b")  # type: ignore[arg-type]
    task = asyncio.ensure_future(Retry(3, backoff=ZERO, budget=budget).call(Upstream()))
    await cancel_when(task, lambda: gated.waiting == 1)
    gated.gate.set()
    await _until(lambda: gated.done == 1)
    await asyncio.sleep(0)
    assert budget.pending == 1  # the deposit never reached the store: still pending, once
    assert budget.credits == 0
    gated.fail = False
    await budget.flush()
    assert await counts(gated.inner) == (1, 0)


@pytest.mark.redis
async def test_cancel_in_the_withdrawal_on_a_paused_redis(
    fresh_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The withdrawal's EVALSHA is in flight (Redis paused) when the call is cancelled; Redis
    runs it on resume: the grant it counted becomes a credit, the deposit is not resent."""
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=2.0)
    try:
        budget = RetryBudget(0, 1, store=store, name="b")
        up = Upstream()

        async def first_attempt_then_pause() -> str:
            try:
                return await up()
            finally:
                fresh_redis_server.signal(signal.SIGSTOP)

        task = asyncio.ensure_future(
            Retry(3, backoff=ZERO, budget=budget).call(first_attempt_then_pause)
        )
        await asyncio.sleep(0.1)  # the withdrawal is written, its reply not read
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fresh_redis_server.signal(signal.SIGCONT)
        await _until(lambda: budget.credits == 1)
        assert up.calls == 1
        assert budget.pending == 0
        assert await counts(store) == (1, 1)
        no_give_up(caplog)
    finally:
        fresh_redis_server.signal(signal.SIGCONT)
        await store.aclose()


# ---------------------------------------------------------------- the flush


@pytest.mark.parametrize("fails", [False, True])
async def test_cancel_in_a_flush(fails: bool) -> None:
    gated = GatedStore()
    budget = RetryBudget(0, 1, store=gated, name="b")  # type: ignore[arg-type]
    for _ in range(3):
        budget.deposit()
    task = asyncio.ensure_future(budget.flush())
    await cancel_when(task, lambda: gated.waiting == 1)
    gated.fail = fails
    gated.gate.set()
    await _until(lambda: gated.done == 1)
    await asyncio.sleep(0)
    # Sent once, or (the store failed) kept once: never lost, never doubled.
    assert budget.pending == (3 if fails else 0)
    assert await counts(gated.inner) == ((0, 0) if fails else (3, 0))


# ---------------------------------------------------------------- credits


async def test_credits_expire_with_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from resilience.policies.retry import _budget as budget_module

    now = [1000.0]
    monkeypatch.setattr(budget_module, "_monotonic", lambda: now[0])
    store = MemoryStore()
    budget = RetryBudget(0, 0, store=store, name="b")  # never grants by itself
    budget.refund()
    assert budget.credits == 1
    assert await budget.withdraw()  # the credit
    assert not await budget.withdraw()
    budget.refund()
    now[0] += WINDOW  # the store no longer counts that grant: nor do we
    assert budget.credits == 0
    assert not await budget.withdraw()
