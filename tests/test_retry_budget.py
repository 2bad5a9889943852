"""RetryBudget: Finagle semantics (RT-8-like), local deposits, store failures, RT-9 in one
process (memory store, fake clock) and across 2 processes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from typing import Any

import pytest

from resilience import MemoryStore, Retry, RetryBudget, StoreUnavailable, backoff
from resilience.policies.retry import _budget as budget_module
from resilience.stores.base import BudgetResult
from resilience.testing import FakeClock
from tests.redis_servers import RedisServer

ZERO = backoff.constant(0)


def notes(exc: BaseException) -> str:
    """The PEP 678 notes of ``exc``, joined."""
    return "\n".join(getattr(exc, "__notes__", []))


class CountingStore:
    """A MemoryStore proxy that counts budget round trips (and can fail)."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.withdrawals: list[int] = []
        self.deposits: list[int] = []
        self.fail = False
        self.label = "counting"

    async def budget_deposit(self, name: str, count: int, window_s: int) -> None:
        if self.fail:
            raise StoreUnavailable("down")
        self.deposits.append(count)
        await self.inner.budget_deposit(name, count, window_s)

    async def budget_withdraw(self, *args: Any) -> BudgetResult:
        if self.fail:
            raise StoreUnavailable("down")
        self.withdrawals.append(args[1])
        return await self.inner.budget_withdraw(*args)


def always_failing() -> tuple[Any, list[int]]:
    count = [0]

    async def fn() -> None:
        count[0] += 1
        raise ConnectionError("down")

    return fn, count


async def test_floor_then_ratio_then_window_rt8_like() -> None:
    clock = FakeClock(1000.0)
    b = RetryBudget(ratio=0.5, min_per_second=0.3, store=MemoryStore(clock=clock))  # floor 3
    assert [await b.withdraw() for _ in range(4)] == [True, True, True, False]
    for _ in range(10):  # 10 requests -> 5 more retries
        b.deposit()
    assert [await b.withdraw() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(11.0)  # everything left the window: the floor is back, the retries gone
    assert [await b.withdraw() for _ in range(4)] == [True, True, True, False]


async def test_zero_budget_never_retries() -> None:
    b = RetryBudget(0, 0, store=MemoryStore())
    fn, count = always_failing()
    with pytest.raises(ConnectionError) as info:
        await Retry(5, backoff=ZERO, budget=b).call(fn)
    assert count[0] == 1
    assert "retry budget 'default' exhausted" in notes(info.value)


async def test_happy_path_makes_no_store_round_trip() -> None:
    store = CountingStore(MemoryStore())
    b = RetryBudget(store=store)  # type: ignore[arg-type]

    @Retry(3, backoff=ZERO, budget=b)
    async def ok() -> int:
        return 1

    for _ in range(100):
        assert await ok() == 1
    assert store.withdrawals == []
    assert store.deposits == []
    assert b.pending == 100
    # the first retry carries every pending deposit in its one round trip
    fn, count = always_failing()
    with pytest.raises(ConnectionError):
        await Retry(2, backoff=ZERO, budget=b).call(fn)
    assert store.withdrawals == [101]
    assert b.pending == 0
    assert count[0] == 2


async def test_pending_deposits_flush_on_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_module, "FLUSH_INTERVAL", 0.05)
    store = CountingStore(MemoryStore())
    b = RetryBudget(store=store)  # type: ignore[arg-type]
    for _ in range(7):
        b.deposit()
    assert store.deposits == []
    await asyncio.sleep(0.15)
    assert store.deposits == [7]
    assert b.pending == 0


async def test_store_failure_means_no_retry_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A store implementing only the budget operations has no fallback: its failures refuse
    # the retry. (A full store falls back to a local budget: tests/faults/test_budget_down.py.)
    store = CountingStore(MemoryStore())
    store.fail = True
    b = RetryBudget(store=store, name="api")  # type: ignore[arg-type]
    fn, count = always_failing()
    caplog.set_level(logging.WARNING, logger="resilience")
    with pytest.raises(ConnectionError) as info:  # the original error, not StoreUnavailable
        await Retry(3, backoff=ZERO, budget=b).call(fn)
    assert count[0] == 1
    assert "exhausted" in notes(info.value)
    assert any(
        "store failed" in r.getMessage() and r.budget == "api"  # type: ignore[attr-defined]
        for r in caplog.records
    )
    assert b.pending == 1  # the deposit is kept for later, not lost
    store.fail = False
    assert await b.withdraw()
    assert store.withdrawals == [1]


async def test_rt9_memory_store() -> None:
    # RT-9 in one process: 1 000 calls over 10 s (fake clock, 10 ms apart) against an
    # always-failing function, attempts=5, budget 20 % + 10/s: at most 1 000 x 1.2 + 100
    # attempts. The lower bound shows the budget is what limits (5 attempts would be 5 000).
    clock = FakeClock(50.0)
    b = RetryBudget(0.2, 10, store=MemoryStore(clock=clock))
    r = Retry(5, backoff=ZERO, budget=b)
    fn, count = always_failing()
    for _ in range(1000):
        with pytest.raises(ConnectionError):
            await r.call(fn)
        clock.advance(0.00999)
    assert 1000 * 1.2 + 100 - 10 <= count[0] <= 1000 * 1.2 + 100


@pytest.mark.slow
@pytest.mark.redis
def test_rt9_two_processes_share_one_budget(redis_server: RedisServer, prefix: str) -> None:
    # RT-9 across the fleet: 2 processes x 500 always-failing calls, paced over 9 s (within
    # the 10 s window), attempts=5, one budget (20 % + 10/s) in a real redis-server. Shared:
    # at most 1 000 x 1.2 + 100 = 1 300 attempts. Two separate budgets would each allow
    # 500 + 0.2 x 500 + 100 = 700, i.e. 1 400 in total: the bound fails unless the budget
    # really is fleet-wide.
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    procs = [
        ctx.Process(
            target=budget_worker_entry,
            args=(redis_server.url, prefix, 500, 0.018, readies[i], go, out),
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    try:
        for ev in readies:
            assert ev.wait(60), "worker did not start"
        go.set()
        totals = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    total = sum(totals)
    assert total <= 1000 * 1.2 + 100
    assert total >= 1000 * 1.2  # and the budget was used, not refused wholesale


def budget_worker_entry(*args: Any) -> None:
    from tests.retry_workers import budget_worker

    budget_worker(*args)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("inf")}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"min_per_second": "10"}, "min_per_second"),
        ({"name": ""}, "name"),
        ({"store": object()}, "store"),
    ],
)
def test_validation_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises((TypeError, ValueError), match=param):
        RetryBudget(**kwargs)
