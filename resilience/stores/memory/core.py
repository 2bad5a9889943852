"""The in-process store's shared machinery: its clock."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MemoryCore"]


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

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
