"""Concurrency-limit decisions of the in-process store (same rules as the Redis store's
``redis/lua/concurrency_*.lua``): holders with leases, a FIFO queue of waiters with leases.

Waiters are told in-process when they may take a permit: a release calls the subscribed
callbacks on the event loop (``call_soon``), with the tickets of the waiters whose turn it is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from resilience.stores.base import ConcurrencyEventCallback, ConcurrencyReply, ConcurrencySpec
from resilience.stores.memory._core import MemoryCore

__all__ = ["MAX_NOTIFIED", "MemoryConcurrency"]

logger = logging.getLogger("resilience")

#: At most this many tickets in one message; beyond, ``"<tag> *"`` (every waiter asks again).
MAX_NOTIFIED = 32
_MAX_TAGS = 10_000


class _Slots:
    """One limit's state for one key: holders and the queue (dicts keep arrival order)."""

    __slots__ = ("holders", "queue")

    def __init__(self) -> None:
        self.holders: dict[str, int] = {}  # token -> lease expiry (us)
        self.queue: dict[str, int] = {}  # ticket -> lease expiry (us), in arrival order

    def purge(self, now: int) -> bool:
        """Forget expired holders and waiters; ``True`` if any was forgotten."""
        gone = [t for t, exp in self.holders.items() if exp <= now]
        for t in gone:
            del self.holders[t]
        late = [t for t, exp in self.queue.items() if exp <= now]
        for t in late:
            del self.queue[t]
        return bool(gone or late)

    def wait_us(self, now: int, lease: int) -> int:
        """When a waiter should ask again: the earliest lease to expire, at most lease/3."""
        soonest = min(
            itertools.chain(self.holders.values(), self.queue.values()), default=now + lease
        )
        return max(min(soonest - now, lease // 3), 1)


class MemoryConcurrency(MemoryCore):
    """Concurrency limits in process memory (see
    :class:`resilience.stores.base.ConcurrencyOps`)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._slots: dict[tuple[str, str], _Slots] = {}
        self._ctokens = itertools.count(1)
        self._ctags: dict[tuple[str, str], str] = {}
        self._ccallbacks: dict[int, tuple[asyncio.AbstractEventLoop, ConcurrencyEventCallback]] = {}
        self._cids = itertools.count(1)

    def _ctoken(self) -> str:
        return f"{next(self._ctokens):x}"

    async def concurrency_acquire(
        self, spec: ConcurrencySpec, key: str, ticket: str, queue: bool
    ) -> ConcurrencyReply:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_acquire`."""
        if self._pace():
            await asyncio.sleep(0)
        now = self._now_us()
        s = self._slots.get((spec.name, key))
        if s is None:
            s = self._slots[(spec.name, key)] = _Slots()
        freed = s.purge(now)
        lease = spec.lease_us
        if ticket and ticket in s.holders:  # already granted: renew
            s.holders[ticket] = now + lease
            return ConcurrencyReply(True, ticket, len(s.holders), len(s.queue), 0)
        queued = bool(ticket) and ticket in s.queue
        rank = list(s.queue).index(ticket) if queued else len(s.queue)
        if rank < spec.max_in_flight - len(s.holders):
            token = ticket or self._ctoken()
            s.queue.pop(token, None)
            s.holders[token] = now + lease
            if freed:
                self._notify(spec, key, s, token)
            return ConcurrencyReply(True, token, len(s.holders), len(s.queue), 0)
        if not queue:
            if queued:
                del s.queue[ticket]
            wait = s.wait_us(now, lease)
            self._forget_if_empty(spec, key, s)
            return ConcurrencyReply(False, "", len(s.holders), len(s.queue), wait)
        token = ticket or self._ctoken()
        s.queue[token] = now + lease  # a new or forgotten ticket joins at the tail
        if freed:
            self._notify(spec, key, s, token)
        return ConcurrencyReply(False, token, len(s.holders), len(s.queue), s.wait_us(now, lease))

    async def concurrency_renew(self, spec: ConcurrencySpec, key: str, token: str) -> bool:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_renew`."""
        now = self._now_us()
        s = self._slots.get((spec.name, key))
        if s is None:
            s = self._slots[(spec.name, key)] = _Slots()
        held = s.holders.get(token, 0) > now
        s.holders[token] = now + spec.lease_us
        return held

    async def concurrency_release(self, spec: ConcurrencySpec, key: str, token: str) -> None:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_release`."""
        s = self._slots.get((spec.name, key))
        if s is None:
            return
        held = s.holders.pop(token, None) is not None
        removed = s.queue.pop(token, None) is not None or held
        s.purge(self._now_us())
        if removed:
            self._notify(spec, key, s, "")
        self._forget_if_empty(spec, key, s)

    def _forget_if_empty(self, spec: ConcurrencySpec, key: str, s: _Slots) -> None:
        if not s.holders and not s.queue:
            self._slots.pop((spec.name, key), None)

    # ------------------------------------------------------------------ notifications

    def concurrency_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_tag` (a short id
        per pair, made on first use)."""
        tag = self._ctags.get((name, key))
        if tag is None:
            if len(self._ctags) >= _MAX_TAGS:
                self._ctags.clear()
            tag = self._ctags[(name, key)] = f"c{next(self._cids):x}"
        return tag

    def concurrency_subscribe(self, callback: ConcurrencyEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_subscribe`: called
        on the subscriber's loop by the releases of this store."""
        loop = asyncio.get_running_loop()
        cid = next(self._cids)
        self._ccallbacks[cid] = (loop, callback)

        def unsubscribe() -> None:
            self._ccallbacks.pop(cid, None)

        return unsubscribe

    def _notify(self, spec: ConcurrencySpec, key: str, s: _Slots, skip: str) -> None:
        free = spec.max_in_flight - len(s.holders)
        if free <= 0 or not s.queue or not self._ccallbacks:
            return
        tag = self.concurrency_tag(spec.name, key)
        if free > MAX_NOTIFIED and len(s.queue) > MAX_NOTIFIED:
            message = f"{tag} *"
        else:
            tickets = [t for t in itertools.islice(s.queue, free) if t != skip]
            if not tickets:
                return
            message = f"{tag} {' '.join(tickets)}"
        for loop, cb in tuple(self._ccallbacks.values()):
            if loop.is_closed():
                continue
            loop.call_soon(_deliver, cb, message)


def _deliver(cb: ConcurrencyEventCallback, message: str) -> None:
    try:
        cb(message)
    except Exception:
        logger.exception("concurrency event callback %r failed", cb)
