"""Which deciders share each quota: the fair shares of the ``"local"`` fallback.

A :class:`FleetView` belongs to one :class:`resilience.FallbackStore`. Deciders announce
themselves through the shared store (:meth:`resilience.stores.base.PresenceOps.presence_announce`)
at most every ``presence_interval`` seconds per limiter and key, in the background, never on the
decision path; each announcement returns the live deciders ``n`` and this decider's rank ``i``
among them (ids sorted; ids start with their creation time, so a newcomer ranks last). While
the store is down, decider ``i`` of ``n`` takes :func:`fair_share` of each limit: the shares of
every decider that saw the same set add up to exactly the limit.

Readings only grow within a TTL (three intervals) of their last confirmation: right after Redis
restarts empty, the first deciders to announce see only themselves, and trusting that would
inflate their share. Time during which the store was down does not count towards that TTL, and
a decider keeps announcing (in the background) while its own decisions fall back, so a slow
Redis does not make it vanish from the others' readings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from resilience.errors import StoreUnavailable
from resilience.stores.base import Presence, WindowLimit

__all__ = ["PRESENCE_INTERVAL", "FleetView", "fair_share", "member_id"]

logger = logging.getLogger("resilience")

#: Default seconds between two presence announcements of one decider for one key.
PRESENCE_INTERVAL = 2.0
_MAX_TRACKED_KEYS = 10_000
_ALONE = Presence(1, 0)

#: ``presence_announce`` of the shared store.
Announce = Callable[[Sequence[str], str, str, int], Awaitable[Any]]
_Names = tuple[tuple[str, ...], str]  # (limiter names, key)


def fair_share(limit: int, presence: Presence) -> int:
    """Decider ``presence.rank`` of ``presence.members``'s share of ``limit``: ``limit // n``,
    plus 1 for the first ``limit % n`` ranks. Over ranks ``0..n-1`` the shares add up to
    ``limit``."""
    n = max(presence.members, 1)
    rank = min(max(presence.rank, 0), n - 1)
    return limit // n + (1 if rank < limit % n else 0)


def as_presence(p: object) -> Presence:
    """A store's reading for one quota as a :class:`Presence`. A bare count (what stores
    answered before ranks) is read as this decider ranking last, the rank whose share never
    exceeds ``limit // n``."""
    if isinstance(p, Presence):
        return p
    if isinstance(p, int):
        n = max(p, 1)
        return Presence(n, n - 1)
    pair: Any = p
    return Presence(int(pair[0]), int(pair[1]))


def member_id() -> str:
    """A decider id: creation time (us, so newcomers sort last), pid and a random part, all
    fixed-width lowercase hex (the same order under any collation)."""
    return f"{time.time_ns() // 1000:014x}{os.getpid() & 0xFFFFFFFF:08x}{secrets.token_hex(4)}"


class FleetView:
    """This decider's view of who shares each quota (see the module docs).

    Args:
        announce: the shared store's ``presence_announce`` (``None``: never announce; every
            quota then uses the largest set seen, alone if none).
        interval: seconds between two announcements per limiter and key (their TTL is three
            times this).
        clock: a monotonic clock in seconds.
    """

    def __init__(
        self, announce: Announce | None, interval: float, clock: Callable[[], float]
    ) -> None:
        self._announce_fn = announce
        self.interval = interval
        self._clock = clock
        self._pid = os.getpid()
        self._member = member_id()
        self._shares: dict[_Names, tuple[Presence, ...]] = {}
        self._next_announce: dict[_Names, float] = {}
        self._due: dict[tuple[int, str], tuple[Sequence[WindowLimit], float]] = {}
        self._seen: dict[_Names, float] = {}
        self._largest = _ALONE  # the reading with the most deciders seen for any key
        # While the shared store is down, nothing can confirm or refute a reading: that time
        # does not age readings (see down/up).
        self._down_since: float | None = None
        #: Announcements in flight (background tasks).
        self.tasks: set[asyncio.Task[None]] = set()

    def cancel(self) -> None:
        """Cancel the announcements in flight."""
        for t in list(self.tasks):
            t.cancel()

    def down(self) -> None:
        """The shared store has become unavailable: readings stop ageing until :meth:`up`."""
        if self._down_since is None:
            self._down_since = self._clock()

    def up(self) -> None:
        """The shared store answers again: the outage is not counted in any reading's age, so
        a reading confirmed just before it still outweighs the smaller ones of the deciders
        that announce first after it (the others have not announced again yet)."""
        since, self._down_since = self._down_since, None
        if since is None:
            return
        gap = self._clock() - since
        if gap > 0:
            for ck in self._seen:
                self._seen[ck] += gap

    def announce(self, limits: Sequence[WindowLimit], key: str) -> None:
        """Announce this decider for ``limits`` and ``key`` in the background, if the last
        announcement is older than the interval."""
        now = self._clock()
        # Hot path: one dict lookup by the limits object's identity (policies pass the same
        # tuple on every call) instead of building the names tuple.
        fast = self._due.get((id(limits), key))
        if fast is not None and fast[0] is limits and now < fast[1]:
            return
        names = tuple(lim.name for lim in limits)
        ck = (names, key)
        due = self._next_announce.get(ck)
        if due is not None and now < due:
            self._remember_due(limits, key, due)
            return
        if len(self._next_announce) >= _MAX_TRACKED_KEYS:
            self._next_announce.clear()
            self._shares.clear()
            self._seen.clear()
        self._next_announce[ck] = now + self.interval
        self._remember_due(limits, key, now + self.interval)
        if self._announce_fn is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._announce(self._announce_fn, ck))
        except RuntimeError:  # pragma: no cover - no running loop
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _remember_due(self, limits: Sequence[WindowLimit], key: str, due: float) -> None:
        if len(self._due) >= _MAX_TRACKED_KEYS:
            self._due.clear()
        self._due[(id(limits), key)] = (limits, due)

    async def _announce(self, announce: Announce, ck: _Names) -> None:
        names, key = ck
        ttl_us = int(self.interval * 3 * 1e6)
        if self._pid != os.getpid():  # a forked child is another decider
            self._pid = os.getpid()
            self._member = member_id()
        try:
            reply = await announce(names, key, self._member, ttl_us)
            seen = tuple(as_presence(p) for p in reply)
        except StoreUnavailable:
            return
        except Exception:  # pragma: no cover - never let a background task fail loudly
            logger.debug("presence announcement failed", exc_info=True)
            return
        if len(seen) != len(names):
            logger.debug("presence announcement: unexpected reply %r", reply)
            return
        # A count never drops within one TTL of its last confirmation: right after Redis
        # restarts (empty), the first announcers see only themselves, and trusting that would
        # inflate their local share. A reading with fewer members keeps the previous one
        # (count and rank) until that one is older than a TTL.
        now = self._clock()
        prev = self._shares.get(ck)
        fresh = now - self._seen.get(ck, -1e18) < 3 * self.interval
        if prev is not None and len(prev) == len(seen) and fresh:
            merged = tuple(
                p if p.members > c.members else c for p, c in zip(prev, seen, strict=True)
            )
            if merged == seen:  # nothing dropped: the whole reading is confirmed now
                self._seen[ck] = now
            seen = merged
        else:
            self._seen[ck] = now
        self._shares[ck] = seen
        for p in seen:
            if p.members > self._largest.members:
                self._largest = p

    def presence(self, limits: Sequence[WindowLimit], key: str) -> tuple[Presence, ...]:
        """Per limit, the deciders last seen sharing it for ``key`` and this one's rank."""
        seen = self._shares.get((tuple(lim.name for lim in limits), key))
        if seen is None or len(seen) != len(limits):
            return (self._largest,) * len(limits)
        return seen

    def share(self, limits: Sequence[WindowLimit], key: str) -> tuple[WindowLimit, ...]:
        """The limits this decider applies alone while the store is down (its fair share)."""
        return tuple(
            WindowLimit(lim.name, fair_share(lim.limit, p), lim.window_us)
            for lim, p in zip(limits, self.presence(limits, key), strict=True)
        )
