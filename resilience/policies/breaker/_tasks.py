"""The background work of one breaker (returning a cancelled caller's probe permit, listeners
left running after a cancellation, re-seeding a store), held until done and logged if it
fails."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

__all__ = ["Background"]

logger = logging.getLogger("resilience")


class Background:
    """Holds a breaker's background tasks until they are done (an event loop keeps only weak
    references to tasks), logging each that fails."""

    __slots__ = ("name", "tasks")

    def __init__(self, name: str) -> None:
        self.name = name
        self.tasks: set[asyncio.Future[Any]] = set()

    def keep(self, task: asyncio.Future[Any], failure: str = "a background task failed") -> None:
        """Hold ``task`` until it is done (logging ``failure`` if it fails)."""
        self.tasks.add(task)
        task.add_done_callback(functools.partial(self._forget, failure))

    def _forget(self, failure: str, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            logger.warning("circuit breaker %r: %s: %s", self.name, failure, exc)
