"""The in-process store's shared machinery: its clock, and its pace."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from resilience.stores._events import StoreObservers

__all__ = ["PACE", "MemoryCore"]

#: A memory decision completes without suspending, so a tight loop of decisions would starve
#: the event loop: every ``PACE``-th decision of a store yields once (``asyncio.sleep(0)``)
#: before deciding, which bounds the starvation and costs a few percent of a decision.
PACE = 32

_monotonic_ns = time.monotonic_ns


def _monotonic_us() -> int:
    """:func:`time.monotonic` in whole microseconds, without a float in between."""
    return _monotonic_ns() // 1000


def _to_us(clock: Callable[[], float]) -> int:
    return int(clock() * 1_000_000)


class MemoryCore:
    """Base of :class:`resilience.MemoryStore`: holds the clock every feature decides on.

    Args:
        clock: a monotonic clock in seconds (default :func:`time.monotonic`). Tests inject a
            fake one (see :mod:`resilience.testing`).
    """

    label = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._clock = clock
        #: The clock in whole microseconds: every decision reads it through this one function.
        self._now_us: Callable[[], int] = (
            _monotonic_us if clock is time.monotonic else functools.partial(_to_us, clock)
        )
        self._paced = 0
        self._observers = StoreObservers()

    @property
    def decides_locally(self) -> bool:
        """Always ``True``: every decision is taken in this process, without I/O (see
        :attr:`resilience.stores.Store.decides_locally`)."""
        return True

    @property
    def observers(self) -> StoreObservers:
        """See :attr:`resilience.stores.Store.observers`: a memory store is never unavailable,
        so it never reports anything."""
        return self._observers

    def _pace(self) -> bool:
        """Count one decision; ``True`` when this one should yield to the loop first."""
        self._paced += 1
        if self._paced < PACE:
            return False
        self._paced = 0
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
