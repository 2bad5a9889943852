"""Sliding-window decisions of the in-process store (the protocol in ``stores/base.py``).

The same algorithm as ``stores/lua/window_acquire.lua``, on the process's monotonic clock.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from resilience.stores.base import WindowLimit, WindowResult
from resilience.stores.memory.core import MemoryCore

__all__ = ["MemoryWindow"]

_SWEEP_EVERY = 4096


class _Log:
    """One limit's log for one key: entries sorted by slot time, their total weight, penalty."""

    __slots__ = ("at", "penalty", "tokens", "total", "weights", "window")

    def __init__(self) -> None:
        self.window = 0
        self.at: list[int] = []
        self.tokens: list[str] = []
        self.weights: list[int] = []
        self.total = 0
        self.penalty = 0

    def trim(self, horizon: int) -> None:
        # Entries at or before `horizon` (= now - window) have left the window.
        at = self.at
        if at and at[0] <= horizon:
            k = bisect.bisect_right(at, horizon)
            self.total -= sum(self.weights[:k])
            del at[:k], self.tokens[:k], self.weights[:k]

    def earliest(self, now: int, window: int, limit: int, cost: int) -> int:
        """Earliest slot time >= now at which ``cost`` more units fit (ignoring the penalty)."""
        need = self.total + cost - limit
        if need <= 0:
            return now
        acc = 0
        for i, w in enumerate(self.weights):
            acc += w
            if acc >= need:
                return max(now, self.at[i] + window)
        raise AssertionError("log total out of sync")  # pragma: no cover


class MemoryWindow(MemoryCore):
    """Exact sliding log with reservations, in process memory."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._logs: dict[tuple[str, str], _Log] = {}
        self._tokens = itertools.count(1)
        self._created = 0

    def _log(self, name: str, key: str) -> _Log:
        log = self._logs.get((name, key))
        if log is None:
            self._created += 1
            if self._created % _SWEEP_EVERY == 0:
                self._sweep(self._now_us())
            log = self._logs[(name, key)] = _Log()
        return log

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`."""
        now = self._now_us()
        at = now
        remaining: int | None = None
        logs = []
        for lim, cost in zip(limits, costs, strict=True):
            log = self._log(lim.name, key)
            log.window = lim.window_us
            logs.append(log)
            log.trim(now - lim.window_us)
            a = log.earliest(now, lim.window_us, lim.limit, cost)
            at = max(at, a, log.penalty)
            free = lim.limit - log.total
            if log.total + cost <= lim.limit:
                free -= cost
            if remaining is None or free < remaining:
                remaining = free
        assert remaining is not None
        wait = at - now
        if wait > 0 and (max_wait_us < 0 or wait > max_wait_us):
            return WindowResult(False, max(remaining, 0), wait, "")
        token = str(next(self._tokens))
        for log, cost in zip(logs, costs, strict=True):
            i = bisect.bisect_right(log.at, at)
            log.at.insert(i, at)
            log.tokens.insert(i, token)
            log.weights.insert(i, cost)
            log.total += cost
        return WindowResult(True, max(remaining, 0), wait, token)

    def _sweep(self, now: int) -> None:
        # Idle keys do not accumulate: every `_SWEEP_EVERY` new logs, drop the ones whose
        # entries have all left their window and whose penalty has ended (Redis: PEXPIRE).
        idle = [
            k
            for k, log in self._logs.items()
            if (not log.at or log.at[-1] <= now - log.window) and log.penalty <= now
        ]
        for k in idle:
            del self._logs[k]

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_release`."""
        for lim in limits:
            log = self._logs.get((lim.name, key))
            if log is None:
                continue
            try:
                i = log.tokens.index(token)
            except ValueError:
                continue
            log.total -= log.weights[i]
            del log.at[i], log.tokens[i], log.weights[i]

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_penalize`."""
        until = self._now_us() + duration_us
        for lim in limits:
            log = self._log(lim.name, key)
            log.penalty = max(log.penalty, until)
