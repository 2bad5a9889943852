"""The retry budget: retries may add at most a fraction of the request rate, fleet-wide.

Finagle's ``RetryBudget`` (and gRPC's retry throttling) answer the retry storm: when an upstream
fails for everyone, every caller retrying ``attempts`` times multiplies the load by
``attempts`` exactly when the upstream can least take it. A budget caps the *amplification*:
over a sliding 10-second window,

    retries <= ratio * requests + min_per_second * 10

where *requests* counts calls (first attempts) and *retries* counts every further attempt. With
the defaults (20 % + 10/s) a total outage costs the upstream at most 1.2 x the normal request
rate plus 100 retries per 10 s, instead of 3 x with ``attempts=3``.

Shared through the store: with :class:`resilience.RedisStore` every process of the fleet draws
on one budget (by ``name``), decided in one Lua script on Redis's clock.

The happy path costs no round trip: a call's deposit is a local counter increment; pending
deposits travel with the next withdrawal (a retry needs a round trip anyway) or with a timer
flush at most :data:`FLUSH_INTERVAL` seconds after the first pending deposit. Until then other
processes do not see them, which only makes their budget stricter, never looser.
"""

from __future__ import annotations

import asyncio
import logging
import math

from resilience.errors import ResilienceError
from resilience.policies._validate import check_name, check_store
from resilience.stores.base import BudgetResult, Store

__all__ = ["FLUSH_INTERVAL", "WINDOW", "RetryBudget"]

logger = logging.getLogger("resilience")

#: The budget's window in seconds (Finagle's deposit TTL). Counts live in 1-second buckets, so
#: an event counts for between 10 and 11 seconds.
WINDOW = 10
#: Longest time (s) a deposit waits in the process before the store sees it.
FLUSH_INTERVAL = 1.0


class RetryBudget:
    """Allow retries while they stay within ``ratio`` of recent requests, plus a floor.

    Over the last :data:`WINDOW` (10) seconds, a retry is granted when, counting it,
    ``retries <= ratio * requests + min_per_second * 10``. Pass one budget to several
    :class:`resilience.Retry` policies to share it; budgets with the same ``name`` in the same
    store are one budget (fleet-wide with :class:`resilience.RedisStore`).

    When the budget is empty the retrier gives up and the original error surfaces, with a note
    saying the budget was exhausted. If the store fails (:class:`resilience.StoreUnavailable`)
    the retry is refused and a warning is logged: an unreachable Redis never breaks the call,
    it only stops retries.

    Args:
        ratio: retries allowed per request, ``>= 0`` (``0.2`` = 20 %).
        min_per_second: the floor, ``>= 0``: retries allowed per second even without traffic
            (so a rarely-called function still gets its retries).
        store: where the counts live; default: the process-wide :class:`resilience.MemoryStore`.
        name: identifies the budget in the store.
    """

    __slots__ = (
        "_flush_tasks",
        "_pending",
        "_ratio_ppm",
        "_reserve",
        "_timer",
        "min_per_second",
        "name",
        "ratio",
        "store",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10,
        *,
        store: Store | None = None,
        name: str = "default",
    ) -> None:
        self.ratio = _non_negative("ratio", ratio)
        self.min_per_second = _non_negative("min_per_second", min_per_second)
        self.store: Store = check_store(store, "budget_withdraw")
        self.name = check_name(name)
        self._ratio_ppm = round(self.ratio * 1_000_000)
        self._reserve = math.floor(self.min_per_second * WINDOW)
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flush_tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, "
            f"name={self.name!r}, store={self.store!r})"
        )

    @property
    def pending(self) -> int:
        """Deposits counted locally and not yet sent to the store."""
        return self._pending

    def deposit(self) -> None:
        """Count one request (a call's first attempt). Local; no I/O."""
        self._pending += 1
        if self._pending == 1:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # outside a loop: the next withdrawal carries it
                return
            self._timer = loop.call_later(FLUSH_INTERVAL, self._on_timer)

    def _take(self) -> int:
        n = self._pending
        self._pending = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return n

    def _on_timer(self) -> None:
        self._timer = None
        if self._pending:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    async def flush(self) -> None:
        """Send pending deposits to the store now (a failure keeps them pending, logged)."""
        n = self._take()
        if not n:
            return
        try:
            await self.store.budget_deposit(self.name, n, WINDOW)
        except ResilienceError as exc:
            self._pending += n
            logger.warning(
                "retry budget %r: could not record deposits: %s",
                self.name,
                type(exc).__name__,
                extra={"budget": self.name, "reason": type(exc).__name__},
            )

    async def withdraw_result(self) -> BudgetResult:
        """Ask the store for one retry (sending pending deposits along); raises
        :class:`resilience.StoreUnavailable` if the store fails."""
        n = self._take()
        try:
            return await self.store.budget_withdraw(
                self.name, n, self._ratio_ppm, self._reserve, WINDOW
            )
        except ResilienceError:
            # Not sent: keep them. (A cancellation may or may not have reached the store;
            # dropping them errs on the strict side.)
            self._pending += n
            raise

    async def withdraw(self) -> bool:
        """Ask for one retry: ``True`` if granted. A failing store means ``False`` (logged)."""
        try:
            r = await self.withdraw_result()
        except ResilienceError as exc:
            logger.warning(
                "retry budget %r: store failed (%s); not retrying",
                self.name,
                type(exc).__name__,
                extra={"budget": self.name, "reason": type(exc).__name__},
            )
            return False
        return r.allowed


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v
