"""Retry-budget conformance: :class:`resilience.stores.base.BudgetOps`, driven directly."""

from __future__ import annotations

import asyncio

from resilience.stores.base import Store

__all__ = ["BudgetConformance"]

PPM = 1_000_000


class BudgetConformance:
    """The retry budget's part of the store protocol (a ``store`` fixture gives the store)."""

    async def test_floor_alone_grants_reserve_retries(self, store: Store) -> None:
        got = [await store.budget_withdraw("floor", 0, 0, 5, 10) for _ in range(7)]
        assert [r.allowed for r in got] == [True] * 5 + [False] * 2
        assert got[4].retries == 5
        assert got[-1].retries == 5  # a refusal counts nothing
        assert got[-1].requests == 0

    async def test_ratio_of_deposits(self, store: Store) -> None:
        # 100 requests at 20 %: exactly 20 retries, however they are deposited
        await store.budget_deposit("ratio", 60, 10)
        first = await store.budget_withdraw("ratio", 40, 200_000, 0, 10)
        assert first.allowed
        assert first.requests == 100
        rest = [await store.budget_withdraw("ratio", 0, 200_000, 0, 10) for _ in range(25)]
        assert sum(r.allowed for r in rest) + 1 == 20
        assert rest[-1].retries == 20
        # more traffic refills it: 10 more requests -> 2 more retries
        more = [
            await store.budget_withdraw("ratio", 10 if i == 0 else 0, 200_000, 0, 10)
            for i in range(4)
        ]
        assert [r.allowed for r in more] == [True, True, False, False]

    async def test_ratio_plus_floor_and_names_are_independent(self, store: Store) -> None:
        allowed = 0
        for _ in range(50):
            r = await store.budget_withdraw("a:{x}", 1, 500_000, 3, 10)
            allowed += r.allowed
        # after 50 single deposits: retries <= 0.5 * requests + 3 at every step
        assert r.requests == 50
        assert allowed == r.retries
        assert allowed <= 0.5 * 50 + 3
        assert allowed >= 0.5 * 50 + 3 - 1
        other = await store.budget_withdraw("a:{y}", 0, 0, 1, 10)
        assert other.allowed
        assert other.requests == 0
        assert other.retries == 1

    async def test_concurrent_withdrawals_never_overdraw(self, store: Store) -> None:
        await store.budget_deposit("conc", 100, 10)
        results = await asyncio.gather(
            *[store.budget_withdraw("conc", 0, 100_000, 5, 10) for _ in range(60)]
        )
        assert sum(r.allowed for r in results) == 15  # 10 % of 100 + 5, never more

    async def test_counts_expire_after_the_window(self, store: Store) -> None:
        await store.budget_deposit("exp", 10, 1)
        r = await store.budget_withdraw("exp", 0, PPM, 0, 1)
        assert r.allowed
        assert r.requests == 10
        # an event counts for at most window_s + 1 = 2 seconds of the store's clock
        await asyncio.sleep(2.05)
        r = await store.budget_withdraw("exp", 0, PPM, 0, 1)
        assert not r.allowed
        assert (r.requests, r.retries) == (0, 0)
