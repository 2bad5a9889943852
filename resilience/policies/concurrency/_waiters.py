"""The callers of one :class:`~resilience.policies.concurrency.ConcurrencyLimit` queued in this
process, and how they are woken without polling.

A waiter sleeps until the store tells it that its turn may have come (a message of
:meth:`resilience.stores.base.ConcurrencyOps.concurrency_subscribe` naming its ticket, its
limit's ``*``, or ``""``: messages may have been lost) or until the re-check time the store
gave it (its reply's ``wait_us``: the earliest lease that could free a slot, at most a third of
a lease, which also keeps the waiter's own place in the queue alive). Then it asks the store
once. The subscription is shared by all the limit's waiters on one event loop; it is taken
with the first waiter and dropped :data:`LINGER` seconds after the last one left (a burst of
waits does not open and close a connection each time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from resilience.stores.base import Store

__all__ = ["LINGER", "Waiter", "Waiters"]

#: Seconds the subscription outlives the last waiter.
LINGER = 30.0


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Waiter:
    """One queued caller: woken by a message, or at its re-check time."""

    __slots__ = ("fut", "woken")

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] | None = None
        self.woken = False

    def wake(self) -> None:
        self.woken = True
        if self.fut is not None:
            _wake(self.fut)

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until woken (at once if woken since the last sleep)."""
        if self.woken:
            self.woken = False
            return
        loop = asyncio.get_running_loop()
        fut = self.fut = loop.create_future()
        handle = loop.call_later(max(delay, 0.0), _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self.fut = None
            self.woken = False


class Waiters:
    """The queued callers of one limit, by tag and ticket, and the subscription that wakes
    them (see the module docs)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._by_tag: dict[str, dict[str, Waiter]] = {}
        self.count = 0

    def add(self, tag: str, ticket: str) -> Waiter:
        """Register a waiter (subscribing first if needed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: the old subscription belongs to another
            self._drop()
            self._by_tag.clear()
            self.count = 0
            self._loop = loop
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._unsubscribe is None:
            self._unsubscribe = self._store.concurrency_subscribe(self._on_message)
        waiter = Waiter()
        self._by_tag.setdefault(tag, {})[ticket] = waiter
        self.count += 1
        return waiter

    def rename(self, tag: str, old: str, new: str) -> None:
        """The store gave waiter ``old`` a new ticket (see FallbackStore's moves)."""
        d = self._by_tag.get(tag)
        if d is not None and old in d:
            d[new] = d.pop(old)

    def remove(self, tag: str, ticket: str) -> None:
        """Forget a waiter; the subscription lingers after the last one."""
        d = self._by_tag.get(tag)
        if d is None or d.pop(ticket, None) is None:
            return
        if not d:
            del self._by_tag[tag]
        self.count -= 1
        if self.count == 0 and self._loop is not None and not self._loop.is_closed():
            self._linger = self._loop.call_later(LINGER, self._drop)

    def _drop(self) -> None:
        self._linger = None
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def _on_message(self, message: str) -> None:
        if not message:  # messages may have been lost: everyone asks again
            for d in self._by_tag.values():
                for w in d.values():
                    w.wake()
            return
        tag, _, rest = message.partition(" ")
        of_tag = self._by_tag.get(tag)
        if of_tag is None:
            return
        if rest == "*":
            for w in of_tag.values():
                w.wake()
            return
        for ticket in rest.split():
            one = of_tag.get(ticket)
            if one is not None:
                one.wake()
