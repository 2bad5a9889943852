"""Cheap per-attempt deadlines: one shared timer per event loop instead of one per attempt.

``asyncio.timeout`` costs a ``TimerHandle`` (Python objects, a heap push with Python-level
comparisons) plus a context-manager object per use: several microseconds per attempt, more than
the whole retrier. Here every running attempt registers ``[deadline, seq, task, state]`` in a
per-loop heap of plain lists (compared in C), and one loop timer fires at the earliest
deadline, cancelling the tasks whose attempts are still running. Finished attempts are marked
done and removed lazily; the heap is compacted when more than half of it is dead, so memory
stays proportional to the attempts in flight.

The cancellation is turned back into :class:`TimeoutError` by :func:`run_bounded`, with the
same bookkeeping as ``asyncio.timeout`` (``Task.uncancel`` on 3.11+), so an *external*
cancellation arriving at the same time still propagates as ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["arm", "await_bounded", "disarm", "fired", "run_bounded", "uncancel_if_expired"]

T = TypeVar("T")

_ACTIVE, _DONE, _FIRED = 0, 1, 2
_monotonic = time.monotonic
_current_task = asyncio.current_task


class _Watchdog:
    __slots__ = ("dead", "handle", "heap", "loop", "seq", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[list[Any]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.when = float("inf")
        self.seq = itertools.count()
        self.dead = 0

    def add(self, deadline: float, task: asyncio.Task[Any]) -> list[Any]:
        entry = [deadline, next(self.seq), task, _ACTIVE]
        heapq.heappush(self.heap, entry)
        if deadline < self.when:
            self._arm(deadline)
        return entry

    def done(self, entry: list[Any]) -> None:
        entry[3] = _DONE
        entry[2] = None  # drop the task reference at once
        self.dead += 1
        if self.dead > 64 and self.dead * 2 > len(self.heap):
            self.heap = [e for e in self.heap if e[3] == _ACTIVE]
            heapq.heapify(self.heap)
            self.dead = 0

    def _arm(self, deadline: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.when = deadline
        # loop.time() and time.monotonic() share a clock in asyncio's default loops; convert
        # through the difference so a loop with another origin (uvloop) works too.
        delay = deadline - _monotonic()
        self.handle = self.loop.call_later(delay if delay > 0 else 0, self._fire)

    def _fire(self) -> None:
        self.handle = None
        self.when = float("inf")
        heap = self.heap
        now = _monotonic()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if entry[3] == _ACTIVE:
                entry[3] = _FIRED
                entry[2].cancel()
            else:
                self.dead -= 1
        while heap and heap[0][3] != _ACTIVE:
            heapq.heappop(heap)
            self.dead -= 1
        if self.dead < 0:  # pragma: no cover - defensive
            self.dead = 0
        if heap:
            self._arm(heap[0][0])


_last: tuple[asyncio.AbstractEventLoop | None, _Watchdog | None] = (None, None)


def _watchdog(loop: asyncio.AbstractEventLoop) -> _Watchdog:
    global _last
    last = _last  # one read: other threads run other loops
    if last[0] is loop:
        return last[1]  # type: ignore[return-value]
    dog: _Watchdog | None = getattr(loop, "_resilience_watchdog", None)
    if dog is None:
        dog = _Watchdog(loop)
        # a loop type that refuses attributes (uvloop) keeps only the one-entry cache
        with contextlib.suppress(AttributeError):
            loop._resilience_watchdog = dog  # type: ignore[attr-defined]
    _last = (loop, dog)
    return dog


async def run_bounded(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``await call()`` cancelled at ``deadline`` (``time.monotonic()``), which then raises
    :class:`TimeoutError`; a deadline already passed raises it without calling."""
    if deadline <= _monotonic():
        raise TimeoutError("deadline reached before the attempt started")
    return await await_bounded(call(), deadline)


async def await_bounded(aw: Awaitable[T], deadline: float) -> T:
    """``await aw`` cancelled at ``deadline`` (``time.monotonic()``), which then raises
    :class:`TimeoutError`."""
    task = _current_task()
    if task is None:  # pragma: no cover - not inside a task
        raise RuntimeError("a deadline needs a running asyncio task")
    entry = arm(deadline, task)
    try:
        return await aw
    except asyncio.CancelledError as exc:
        if uncancel_if_expired(entry):
            raise TimeoutError("deadline reached during the attempt") from exc
        raise
    finally:
        disarm(entry)


def arm(deadline: float, task: asyncio.Task[Any]) -> list[Any]:
    """Have ``task`` (the current one) cancelled at ``deadline``; return the handle for
    :func:`disarm`.

    The inline form of :func:`await_bounded` for hot paths that would otherwise wrap a
    coroutine in another: ``entry = arm(d, task)``, then ``try: await ... except
    CancelledError: if uncancel_if_expired(entry): <timed out> ... finally: disarm(entry)``.
    """
    dog = _watchdog(task.get_loop())
    entry = dog.add(deadline, task)
    entry.append(dog)
    return entry


def uncancel_if_expired(entry: list[Any]) -> bool:
    """If the ``CancelledError`` being handled came from ``entry``'s deadline alone, withdraw
    that cancellation request from the task and return True; otherwise return False.

    Not a mere query: when ``entry``'s deadline fired, this calls ``Task.uncancel`` (3.11+,
    as ``asyncio.timeout`` does), which the caller must follow by turning the
    ``CancelledError`` into a timeout. Call it once, only while handling that
    ``CancelledError``. False means someone else cancelled the task too (or the deadline did
    not fire), and the cancellation must propagate.
    """
    return entry[3] == _FIRED and _uncancel(entry[2])


def fired(entry: list[Any]) -> bool:
    """Whether ``entry``'s deadline has come and its task was cancelled (a mere query)."""
    return bool(entry[3] == _FIRED)


def disarm(entry: list[Any]) -> None:
    """The bounded section is over (whichever way): forget ``entry``."""
    if entry[3] == _ACTIVE:
        entry[4].done(entry)


if sys.version_info >= (3, 11):

    def _uncancel(task: asyncio.Task[Any]) -> bool:
        # Ours was the only cancellation request: convert it. Otherwise someone else cancelled
        # the task too, and CancelledError must propagate (as asyncio.timeout does).
        return task.uncancel() == 0

else:  # pragma: no cover - Python 3.10

    def _uncancel(task: asyncio.Task[Any]) -> bool:
        return True
