"""The in-process store: the embedded default, exact and fast, for one process."""

from __future__ import annotations

import time
from collections.abc import Callable

from resilience.stores.memory._breaker import MemoryBreaker
from resilience.stores.memory._budget import MemoryBudget
from resilience.stores.memory._concurrency import MemoryConcurrency
from resilience.stores.memory._presence import MemoryPresence
from resilience.stores.memory._registry import MemoryRegistry
from resilience.stores.memory._window import MemoryWindow

__all__ = ["MemoryStore", "default_store"]


class MemoryStore(
    MemoryWindow, MemoryBreaker, MemoryBudget, MemoryPresence, MemoryConcurrency, MemoryRegistry
):
    """Shared state for the policies of one process, decided on its monotonic clock.

    The embedded default when a policy is given no store. Every decision is atomic because it
    runs without an ``await`` on the event loop. State is per process: use
    :class:`resilience.RedisStore` to share limits and breakers across processes and machines.

    Args:
        clock: a monotonic clock in seconds (default :func:`time.monotonic`).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock=clock)


_default: MemoryStore | None = None


def default_store() -> MemoryStore:
    """The process-wide :class:`MemoryStore` used by policies given no ``store``."""
    global _default
    if _default is None:
        _default = MemoryStore()
    return _default
