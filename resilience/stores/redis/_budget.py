"""Retry-budget decisions of the Redis store (``lua/budget_*.lua``, Redis TIME clock)."""

from __future__ import annotations

from resilience.stores.base import BudgetResult
from resilience.stores.redis._core import RedisCore
from resilience.stores.redis._keys import budget_key

__all__ = ["RedisBudget"]


class RedisBudget(RedisCore):
    """Per-second request/retry buckets of each budget in one Redis hash (O(1) memory)."""

    async def budget_deposit(self, name: str, count: int, window_s: int) -> None:
        """See :meth:`resilience.stores.base.BudgetOps.budget_deposit`."""
        await self._eval("budget_deposit", [budget_key(self.prefix, name)], [count, window_s])

    async def budget_withdraw(
        self, name: str, deposits: int, ratio_ppm: int, reserve: int, window_s: int
    ) -> BudgetResult:
        """See :meth:`resilience.stores.base.BudgetOps.budget_withdraw`."""
        r = await self._eval(
            "budget_withdraw",
            [budget_key(self.prefix, name)],
            [deposits, ratio_ppm, reserve, window_s],
        )
        return BudgetResult(bool(int(r[0])), int(r[1]), int(r[2]))
