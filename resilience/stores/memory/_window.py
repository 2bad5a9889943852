"""Sliding-window decisions of the in-process store (the protocol in ``stores/base.py``).

The same algorithm as ``stores/redis/lua/window_acquire.lua``, on the process's monotonic clock.
Every decision runs without an ``await`` in between, so it is atomic on the event loop.

Each limit's log for one key is a :class:`~resilience.stores.memory._log.Log`: parallel lists
sorted by slot time, trimmed by moving a head index (see there).

Python's ints are exact at any size, Lua's doubles only up to 2**53: like the script, a log
never weighs more than :data:`resilience.stores.base.MAX_WEIGHT` (admitted plus reserved), so
both stores decide the same.

Besides the protocol's ``window_acquire``, :meth:`MemoryWindow.window_admit` offers the one
decision a rate-limiting policy takes on nearly every call, "room now?", synchronously: a
policy that finds it on a store whose decisions are local (``decides_locally``) skips the
coroutine of a store call (see ``SlidingWindowLimiter.execute``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Sequence

from resilience.stores.base import (
    MAX_WEIGHT,
    MERGE_ABOVE,
    MERGE_FROM,
    MERGE_GRACE_US,
    WindowLimit,
    WindowResult,
    merge_slot_us,
)
from resilience.stores.memory._core import PACE, MemoryCore
from resilience.stores.memory._log import COMPACT_MIN as _COMPACT_MIN
from resilience.stores.memory._log import Log as _Log

__all__ = ["MemoryWindow"]

_SWEEP_EVERY = 4096
# tuple.__new__ bound to WindowResult: a C call, several times cheaper than the NamedTuple's
# Python __new__ (and than its _make, a Python classmethod on 3.11).
_result = functools.partial(tuple.__new__, WindowResult)


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
        *,
        merge: bool = False,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`."""
        if self._pace():
            await asyncio.sleep(0)
        now = self._now_us()
        if len(limits) == 1:  # the common case, without the loops
            lim = limits[0]
            cost = costs[0]
            log = self._log(lim, key)
            log.trim(now - lim.window_us)
            limit = log.limit(lim.limit, cost, now) if log.cap_until else lim.limit
            at = log.earliest(now, lim.window_us, limit, cost)
            if log.penalty > at:
                at = log.penalty
            remaining = limit - log.total
            if remaining >= cost:
                remaining -= cost
            wait = at - now
            if wait > 0 and (
                max_wait_us < 0 or wait > max_wait_us or log.total + cost > MAX_WEIGHT
            ):
                return _result((False, remaining if remaining > 0 else 0, wait, ""))
            token = str(next(self._tokens))
            slot = merge_slot_us(lim.limit, lim.window_us) if merge else 0
            if slot:  # as window_acquire.lua: "m", and merging once the log is large
                token = "m" + token
                if len(log.at) - log.head < MERGE_FROM:
                    slot = 0
                else:
                    log.compact(now - MERGE_GRACE_US, slot)
            if slot and wait == 0:
                log.merge(now - now % slot + slot - 1, cost)
            else:  # (a merging caller's admission for now: no "m", as window_acquire.lua)
                log.insert(
                    at, token[1:] if merge and wait == 0 and token[0] == "m" else token, cost
                )
            return _result((True, remaining if remaining > 0 else 0, wait, token))
        at = now
        rem: int | None = None
        over = False
        logs = []
        for lim, cost in zip(limits, costs, strict=True):
            log = self._log(lim, key)
            logs.append(log)
            log.trim(now - lim.window_us)
            limit = log.limit(lim.limit, cost, now)
            at = max(at, log.earliest(now, lim.window_us, limit, cost), log.penalty)
            if log.total + cost > MAX_WEIGHT:
                over = True
            free = limit - log.total
            if free >= cost:
                free -= cost
            if rem is None or free < rem:
                rem = free
        remaining = max(rem or 0, 0)
        wait = at - now
        if wait > 0 and (max_wait_us < 0 or wait > max_wait_us or over):
            return WindowResult(False, remaining, wait, "")
        token = str(next(self._tokens))
        slots = [merge_slot_us(lim.limit, lim.window_us) if merge else 0 for lim in limits]
        if any(slots):
            token = "m" + token
        for j, g in enumerate(logs):
            if len(g.at) - g.head < MERGE_FROM:
                slots[j] = 0
        for slot, log, cost in zip(slots, logs, costs, strict=True):
            if slot:
                log.compact(now - MERGE_GRACE_US, slot)
            if slot and wait == 0:
                log.merge(now - now % slot + slot - 1, cost)
            else:
                log.insert(at, token[1:] if wait == 0 and token[0] == "m" else token, cost)
        return WindowResult(True, remaining, wait, token)

    def window_admit(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        merge: bool = False,
    ) -> bool | None:
        """Admit the request now if every limit has room for it now; otherwise do nothing.

        Synchronous: the decision :meth:`window_acquire` takes when it admits for now
        (``wait_us == 0``), without the coroutine, for a caller that uses its slot at once and
        so never releases it (the entry carries no token; with ``merge`` it may share its
        slot's entry, as :meth:`window_acquire` with ``merge=True`` does).
        ``True``: admitted. ``False``,
        with nothing recorded and no decision counted, when the request would wait or be
        refused: the caller then awaits :meth:`window_acquire`. ``None`` on the store's pace
        turn (every :data:`~resilience.stores.memory._core.PACE`-th decision yields to the
        loop first): the turn is taken, nothing else is done, and the caller yields
        (``await asyncio.sleep(0)``) before it asks again.
        """
        paced = self._paced + 1
        if paced >= PACE:
            self._paced = 0
            return None
        now = self._now_us()
        if len(limits) == 1:  # the common case, without the loops
            lim = limits[0]
            cost = costs[0]
            log = self._logs.get((lim.name, key))
            if log is None:
                log = self._log(lim, key)
            else:
                log.window = lim.window_us
            at = log.at
            head = log.head
            horizon = now - lim.window_us
            if head < len(at) and at[head] <= horizon:
                nxt = head + 1
                if (nxt < len(at) and at[nxt] <= horizon) or (
                    nxt >= _COMPACT_MIN and nxt * 2 >= len(at)
                ):
                    log.trim(horizon)  # several entries left, or time to compact
                else:  # the steady state: the oldest entry left since the last decision
                    log.total -= log.weights[head]
                    log.head = nxt
            if (
                log.total + cost > lim.limit
                or log.penalty > now
                or (log.cap_until and log.total + cost > log.limit(lim.limit, cost, now))
            ):
                return False
            if merge and lim.limit > MERGE_ABOVE and len(at) - log.head >= MERGE_FROM:
                slot = merge_slot_us(lim.limit, lim.window_us)
                log.merge(now - now % slot + slot - 1, cost)
            elif not at or at[-1] <= now:  # no reservation ahead: the newest entry
                at.append(now)
                log.tokens.append("")
                log.weights.append(cost)
                log.total += cost
            else:
                log.insert(now, "", cost)
            self._paced = paced
            return True
        logs = []
        for lim, cost in zip(limits, costs, strict=True):
            log = self._log(lim, key)
            log.trim(now - lim.window_us)
            if log.total + cost > log.limit(lim.limit, cost, now) or log.penalty > now:
                return False
            logs.append(log)
        for lim, log, cost in zip(limits, logs, costs, strict=True):
            slot = merge_slot_us(lim.limit, lim.window_us) if merge else 0
            if slot and len(log.at) - log.head >= MERGE_FROM:
                log.merge(now - now % slot + slot - 1, cost)
            else:
                log.insert(now, "", cost)
        self._paced = paced
        return True

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

    async def window_learn(
        self, limits: Sequence[WindowLimit], key: str, limit: int, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_learn`."""
        until = self._now_us() + duration_us
        for lim in limits:
            log = self._log(lim, key)
            log.cap = limit
            log.cap_until = until if duration_us > 0 else 0

    async def window_settle(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        token: str,
        costs: Sequence[int],
        actual: Sequence[int],
    ) -> bool:
        """See :meth:`resilience.stores.base.WindowOps.window_settle`."""
        now = self._now_us()
        done = False
        for lim, cost, new in zip(limits, costs, actual, strict=True):
            log = self._logs.get((lim.name, key))
            if log is None:
                continue
            log.trim(now - lim.window_us)
            i = log.find(token, cost)
            if i < 0:
                continue
            log.total += new - cost
            if new == 0:
                del log.at[i], log.tokens[i], log.weights[i]
            else:
                log.weights[i] = new
            done = True
        return done

    async def window_advance(
        self, limits: Sequence[WindowLimit], key: str, token: str, costs: Sequence[int]
    ) -> int:
        """See :meth:`resilience.stores.base.WindowOps.window_advance`."""
        now = self._now_us()
        found: list[tuple[_Log, int]] = []
        for lim, cost in zip(limits, costs, strict=True):
            log = self._logs.get((lim.name, key))
            if log is None:
                return -1
            log.trim(now - lim.window_us)
            i = log.find(token, cost)
            if i < 0:
                return -1
            found.append((log, i))
        old = found[0][0].at[found[0][1]]
        if old <= now:
            return 0
        for (log, i), cost in zip(found, costs, strict=True):  # leave the entry out ...
            del log.at[i], log.tokens[i], log.weights[i]
            log.total -= cost
        at = now
        for (log, _), lim, cost in zip(found, limits, costs, strict=True):
            limit = log.limit(lim.limit, cost, now)
            at = max(at, log.earliest(now, lim.window_us, limit, cost), log.penalty)
        at = min(at, old)
        for (log, _), cost in zip(found, costs, strict=True):  # ... and put it back
            log.insert(at, token, cost)
        return at - now

    async def window_paused(self, limits: Sequence[WindowLimit], key: str) -> int:
        """See :meth:`resilience.stores.base.WindowOps.window_paused`."""
        now = self._now_us()
        left = 0
        for lim in limits:
            log = self._logs.get((lim.name, key))
            if log is not None and log.penalty - now > left:
                left = log.penalty - now
        return left

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_penalize`."""
        until = self._now_us() + duration_us
        for lim in limits:
            log = self._log(lim, key)
            log.penalty = max(log.penalty, until)
