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

Store down: by default (``fallback="local"``) the budget keeps deciding in-process, with the same
ratio and floor, over this process's own requests and retries
(:class:`resilience.FallbackStore`), and goes back to the shared budget as soon as the store
answers again.

Cancellation never leaks nor double counts (each retry granted is counted once, each request
once): a withdrawal or flush whose caller is cancelled mid round trip runs to its end in the
background and is booked then (deposits that did not reach the store are kept pending; a grant
becomes a credit, below); a granted retry that will not run after all (its call was cancelled in
the backoff sleep, or the deadline passed meanwhile) is given back with :meth:`RetryBudget.refund`
and becomes a *credit*: the store already counts it, so the next withdrawal of this budget
object within :data:`WINDOW` seconds uses it without a round trip.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from resilience.errors import ResilienceError
from resilience.policies._registry import note_budget
from resilience.policies._validate import check_name, check_store
from resilience.stores import FallbackMode, check_fallback, with_fallback
from resilience.stores.base import BudgetResult, Store

__all__ = ["FLUSH_INTERVAL", "WINDOW", "RetryBudget"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

#: The budget's window in seconds (Finagle's deposit TTL). Counts live in 1-second buckets, so
#: an event counts for between 10 and 11 seconds.
WINDOW = 10
#: Longest time (s) a deposit waits in the process before the store sees it.
FLUSH_INTERVAL = 1.0

_monotonic = time.monotonic


class RetryBudget:
    """Allow retries while they stay within ``ratio`` of recent requests, plus a floor.

    Over the last :data:`WINDOW` (10) seconds, a retry is granted when, counting it,
    ``retries <= ratio * requests + min_per_second * 10``. Pass one budget to several
    :class:`resilience.Retry` policies to share it; budgets with the same ``name`` in the same
    store are one budget (fleet-wide with :class:`resilience.RedisStore`).

    When the budget is empty the retrier gives up and the original error surfaces, with a note
    saying the budget was exhausted. An unreachable store never breaks the call: by default
    (``fallback="local"``) this process keeps a local budget with the same ratio and floor
    while the store is unavailable, and draws on the shared one again as soon as it answers.

    Args:
        ratio: retries allowed per request, ``>= 0`` (``0.2`` = 20 %).
        min_per_second: the floor, ``>= 0``: retries allowed per second even without traffic
            (so a rarely-called function still gets its retries).
        store: where the counts live; default: the process-wide :class:`resilience.MemoryStore`.
        name: identifies the budget in the store.
        fallback: what to do when the store is unavailable
            (:class:`resilience.StoreUnavailable`): ``"local"`` (default: a local budget in
            this process, same ratio and floor, counting this process's requests and retries
            during the outage), ``"allow"`` (grant every retry) or ``"deny"`` (refuse every
            retry, logged); see :class:`resilience.FallbackStore`. Decisions taken locally are
            never replayed into the store. A store that implements only the budget operations
            is used without a fallback (its failures refuse the retry, logged).
    """

    __slots__ = (
        "_background",
        "_credits",
        "_memory",
        "_pending",
        "_ratio_ppm",
        "_registered",
        "_reserve",
        "_timer",
        "fallback",
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
        fallback: FallbackMode = "local",
    ) -> None:
        self.ratio = _non_negative("ratio", ratio)
        self.min_per_second = _non_negative("min_per_second", min_per_second)
        store = check_store(store, "budget_withdraw")
        self.fallback: FallbackMode = check_fallback(fallback)
        if callable(getattr(store, "window_acquire", None)):
            store = with_fallback(store, self.fallback)
        self.store: Store = store
        self.name = check_name(name)
        self._ratio_ppm = round(self.ratio * 1_000_000)
        self._reserve = math.floor(self.min_per_second * WINDOW)
        self._pending = 0
        self._registered = False  # in the operator tools' registry (policies/_registry)
        self._timer: asyncio.TimerHandle | None = None
        # Timer flushes, and round trips whose caller was cancelled: referenced until done.
        self._background: set[asyncio.Future[Any]] = set()
        # Grants the store counted whose retry did not run: monotonic time of each grant.
        self._credits: collections.deque[float] = collections.deque()
        # A store that decides locally (a MemoryStore) never suspends mid-decision: no
        # cancellation can land in it.
        self._memory = bool(getattr(store, "decides_locally", False))

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, "
            f"name={self.name!r}, store={self.store!r}, fallback={self.fallback!r})"
        )

    @property
    def pending(self) -> int:
        """Deposits counted locally and not yet sent to the store."""
        return self._pending

    @property
    def credits(self) -> int:
        """Granted retries given back (:meth:`refund`) and still usable, not yet used again."""
        self._expire_credits()
        return len(self._credits)

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
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _round_trip(
        self, coro: Coroutine[Any, Any, T], deposits: int, on_cancel: Any = None
    ) -> T:
        """Await one store call that carries ``deposits``; a cancelled caller does not cut it.

        The store call runs to its end in its own task (it is bounded by the store's timeout)
        and is booked then: deposits that did not reach the store (a :class:`ResilienceError`)
        go back to pending, and ``on_cancel(result)`` books what the store decided.
        """
        if not self._registered:
            note_budget(self, WINDOW)
        if self._memory:
            return await coro  # never suspends: nothing can be cut
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(lambda t: self._settle(t, deposits, on_cancel))
            raise

    def _settle(self, task: asyncio.Future[Any], deposits: int, on_cancel: Any) -> None:
        if task.cancelled():  # the loop is closing: whether the store saw them is unknown
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, ResilienceError):
                self._pending += deposits
            return
        if on_cancel is not None:
            on_cancel(task.result())

    def _settle_withdrawal(self, result: BudgetResult) -> None:
        if result.allowed:  # granted to a caller that is gone: keep it for the next one
            self.refund()

    async def flush(self) -> None:
        """Send pending deposits to the store now (a failure keeps them pending, logged)."""
        n = self._take()
        if not n:
            return
        try:
            await self._round_trip(self.store.budget_deposit(self.name, n, WINDOW), n)
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
        :class:`resilience.StoreUnavailable` if the store fails (with ``fallback="deny"``).

        Always a round trip: credits (see :meth:`refund`) are used by :meth:`withdraw` only.
        """
        n = self._take()
        coro = self.store.budget_withdraw(self.name, n, self._ratio_ppm, self._reserve, WINDOW)
        try:
            return await self._round_trip(coro, n, self._settle_withdrawal)
        except ResilienceError:
            self._pending += n  # not counted by the store: keep them
            raise

    async def withdraw(self) -> bool:
        """Ask for one retry: ``True`` if granted. A credit (see :meth:`refund`) is used first,
        without a round trip. A failing store without fallback means ``False`` (logged)."""
        if self._credits and self._use_credit():
            return True
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

    def refund(self) -> None:
        """Give back a granted retry that will not run (its call was cancelled, or gave up).

        The store keeps counting it (there is no un-counting), so it becomes a credit: the
        next :meth:`withdraw` of this budget object within :data:`WINDOW` seconds is granted
        from it without a round trip. Each grant is so counted once and used at most once.
        """
        self._credits.append(_monotonic())

    def _expire_credits(self) -> None:
        # The store counts a grant for at least WINDOW seconds: a credit older than that
        # would be a retry it no longer counts.
        horizon = _monotonic() - WINDOW
        credits = self._credits
        while credits and credits[0] <= horizon:
            credits.popleft()

    def _use_credit(self) -> bool:
        self._expire_credits()
        if not self._credits:
            return False
        self._credits.popleft()
        return True


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v
