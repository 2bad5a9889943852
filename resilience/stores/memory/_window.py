"""Sliding-window decisions of the in-process store (the protocol in ``stores/base.py``).

The same algorithm as ``stores/redis/lua/window_acquire.lua``, on the process's monotonic clock.
Every decision runs without an ``await`` in between, so it is atomic on the event loop.

Each log keeps its entries in three parallel lists (slot time, weight, token) sorted by slot
time, with a ``head`` index before which entries have left the window: trimming moves ``head``
instead of shifting the lists, and the dead prefix is dropped once it is larger than the live
part, so a decision costs O(log n) amortized however long the log is.

Python's ints are exact at any size, Lua's doubles only up to 2**53: like the script, a log
never weighs more than :data:`resilience.stores.base.MAX_WEIGHT` (admitted plus reserved), so
both stores decide the same.
"""

from __future__ import annotations

import asyncio
import itertools
from bisect import bisect_right
from collections.abc import Sequence

from resilience.stores.base import MAX_WEIGHT, WindowLimit, WindowResult
from resilience.stores.memory._core import MemoryCore

__all__ = ["MemoryWindow"]

_SWEEP_EVERY = 4096
# WindowResult._make is tuple.__new__ (C), several times cheaper than the NamedTuple's __new__.
_result = WindowResult._make
_COMPACT_MIN = 64


class _Log:
    """One limit's log for one key: live entries are ``at[head:]`` (sorted), their total
    weight, the penalty end and the limit's window (for the idle sweep)."""

    __slots__ = ("at", "head", "penalty", "tokens", "total", "weights", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.at: list[int] = []
        self.tokens: list[str] = []
        self.weights: list[int] = []
        self.head = 0
        self.total = 0
        self.penalty = 0

    def trim(self, horizon: int) -> None:
        """Drop the entries at or before ``horizon`` (= now - window): they left the window."""
        at = self.at
        head = self.head
        if head < len(at) and at[head] <= horizon:
            k = bisect_right(at, horizon, head)
            w = self.weights
            self.total -= w[head] if k == head + 1 else sum(w[head:k])
            if k >= _COMPACT_MIN and k * 2 >= len(at):
                del at[:k], self.tokens[:k], w[:k]
                k = 0
            self.head = k

    def earliest(self, now: int, window: int, limit: int, cost: int) -> int:
        """Earliest slot time >= now at which ``cost`` more units fit (ignoring the penalty)."""
        need = self.total + cost - limit
        if need <= 0:
            return now
        acc = 0
        weights = self.weights
        for i in range(self.head, len(weights)):
            acc += weights[i]
            if acc >= need:
                slot = self.at[i] + window
                return slot if slot > now else now
        raise AssertionError("log total out of sync")  # pragma: no cover

    def insert(self, at: int, token: str, cost: int) -> None:
        times = self.at
        if not times or times[-1] <= at:  # the common case: the newest entry
            times.append(at)
            self.tokens.append(token)
            self.weights.append(cost)
        else:
            i = bisect_right(times, at, self.head)
            times.insert(i, at)
            self.tokens.insert(i, token)
            self.weights.insert(i, cost)
        self.total += cost

    def remove(self, token: str) -> bool:
        try:
            i = self.tokens.index(token, self.head)
        except ValueError:
            return False
        self.total -= self.weights[i]
        del self.at[i], self.tokens[i], self.weights[i]
        return True


class MemoryWindow(MemoryCore):
    """Exact sliding log with reservations, in process memory."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._logs: dict[tuple[str, str], _Log] = {}
        self._tokens = itertools.count(1)
        self._created = 0

    def _log(self, lim: WindowLimit, key: str) -> _Log:
        log = self._logs.get((lim.name, key))
        if log is None:
            self._created += 1
            if self._created % _SWEEP_EVERY == 0:
                self._sweep(self._now_us())
            log = self._logs[(lim.name, key)] = _Log(lim.window_us)
        else:
            log.window = lim.window_us
        return log

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`."""
        if self._pace():
            await asyncio.sleep(0)
        now = int(self._clock() * 1_000_000)
        if len(limits) == 1:  # the common case, without the loops
            lim = limits[0]
            cost = costs[0]
            log = self._log(lim, key)
            log.trim(now - lim.window_us)
            at = log.earliest(now, lim.window_us, lim.limit, cost)
            if log.penalty > at:
                at = log.penalty
            remaining = lim.limit - log.total
            if remaining >= cost:
                remaining -= cost
            wait = at - now
            if wait > 0 and (
                max_wait_us < 0 or wait > max_wait_us or log.total + cost > MAX_WEIGHT
            ):
                return _result((False, remaining if remaining > 0 else 0, wait, ""))
            token = str(next(self._tokens))
            log.insert(at, token, cost)
            return _result((True, remaining if remaining > 0 else 0, wait, token))
        at = now
        rem: int | None = None
        over = False
        logs = []
        for lim, cost in zip(limits, costs, strict=True):
            log = self._log(lim, key)
            logs.append(log)
            log.trim(now - lim.window_us)
            at = max(at, log.earliest(now, lim.window_us, lim.limit, cost), log.penalty)
            if log.total + cost > MAX_WEIGHT:
                over = True
            free = lim.limit - log.total
            if free >= cost:
                free -= cost
            if rem is None or free < rem:
                rem = free
        remaining = max(rem or 0, 0)
        wait = at - now
        if wait > 0 and (max_wait_us < 0 or wait > max_wait_us or over):
            return WindowResult(False, remaining, wait, "")
        token = str(next(self._tokens))
        for log, cost in zip(logs, costs, strict=True):
            log.insert(at, token, cost)
        return WindowResult(True, remaining, wait, token)

    def _sweep(self, now: int) -> None:
        # Idle keys do not accumulate: every `_SWEEP_EVERY` new logs, drop the ones whose
        # entries have all left their window and whose penalty has ended (Redis: PEXPIRE).
        idle = [
            k
            for k, log in self._logs.items()
            if (len(log.at) <= log.head or log.at[-1] <= now - log.window) and log.penalty <= now
        ]
        for k in idle:
            del self._logs[k]

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_release`."""
        for lim in limits:
            log = self._logs.get((lim.name, key))
            if log is not None:
                log.remove(token)

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_penalize`."""
        until = self._now_us() + duration_us
        for lim in limits:
            log = self._log(lim, key)
            log.penalty = max(log.penalty, until)
