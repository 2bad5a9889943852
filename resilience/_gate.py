"""A counting semaphore whose uncontended acquire costs a method call, not a coroutine.

The Redis store bounds how many of its commands are in flight (see ``RedisStore``'s
``max_concurrency``); every decision passes that bound twice. ``asyncio.Semaphore.acquire`` is
a coroutine even when a slot is free, which costs more than everything else the bound does.
:class:`Gate` has the same semantics with a synchronous fast path::

    if not gate.try_enter():
        await gate.enter()      # queue, first come first served
    try:
        ...
    finally:
        gate.leave()

A slot freed while others queue is handed to the first waiter directly, so a newcomer never
overtakes the queue. A waiter cancelled after it was handed a slot passes the slot on; one
cancelled while waiting leaves the queue. Never more than ``slots`` holders at once.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Gate"]


class Gate:
    """At most ``slots`` holders at a time; the rest queue in arrival order."""

    __slots__ = ("_waiters", "free", "slots")

    def __init__(self, slots: int) -> None:
        if slots <= 0:
            raise ValueError(f"slots must be positive, got {slots!r}")
        self.slots = slots
        #: Slots not held and not promised to a waiter.
        self.free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody queues; never waits."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def enter(self) -> None:
        """Wait for a slot (after everyone already queueing)."""
        if self.try_enter():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.leave()  # handed a slot, but cancelled before using it: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def leave(self) -> None:
        """Give a slot back: to the first waiter still waiting, else to the free count."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1
