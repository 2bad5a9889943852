"""Retry-budget decisions of the in-process store (same algorithm as the Redis store's
``redis/lua/budget_*.lua``)."""

from __future__ import annotations

import asyncio

from resilience.stores.base import BudgetResult
from resilience.stores.memory._core import MemoryCore

__all__ = ["MemoryBudget"]


class _Buckets:
    """``window_s + 1`` one-second buckets: second, requests, granted retries."""

    __slots__ = ("q", "r", "t")

    def __init__(self, n: int) -> None:
        self.t = [-1] * n
        self.r = [0] * n
        self.q = [0] * n


class MemoryBudget(MemoryCore):
    """Per-second request/retry buckets of each budget, in process memory (O(1) per budget)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._budgets: dict[tuple[str, int], _Buckets] = {}

    def _bucket(self, name: str, window_s: int, now: int) -> tuple[_Buckets, int]:
        n = window_s + 1
        b = self._budgets.get((name, window_s))
        if b is None:
            b = self._budgets[(name, window_s)] = _Buckets(n)
        cur = now % n
        if b.t[cur] != now:
            b.t[cur] = now
            b.r[cur] = 0
            b.q[cur] = 0
        return b, cur

    async def budget_deposit(self, name: str, count: int, window_s: int) -> None:
        """See :meth:`resilience.stores.base.BudgetOps.budget_deposit`."""
        now = int(self._clock())
        b, cur = self._bucket(name, window_s, now)
        b.r[cur] += count

    async def budget_withdraw(
        self, name: str, deposits: int, ratio_ppm: int, reserve: int, window_s: int
    ) -> BudgetResult:
        """See :meth:`resilience.stores.base.BudgetOps.budget_withdraw`."""
        if self._pace():
            await asyncio.sleep(0)
        now = int(self._clock())
        b, cur = self._bucket(name, window_s, now)
        b.r[cur] += deposits
        req = ret = 0
        for s, r, q in zip(b.t, b.r, b.q, strict=True):
            if now - window_s <= s <= now:
                req += r
                ret += q
        allowed = (ret + 1) * 1_000_000 <= ratio_ppm * req + reserve * 1_000_000
        if allowed:
            b.q[cur] += 1
            ret += 1
        return BudgetResult(allowed, req, ret)
