"""What a policy does when its shared store (Redis) cannot decide: ``local``, ``allow``, ``deny``.

:class:`FallbackStore` wraps a store and implements the same protocol by delegating every
decision to it. When the store raises :class:`resilience.StoreUnavailable` (Redis down,
hanging, failing over; see :mod:`resilience.stores.health` for how fast that happens), the
fallback mode decides instead:

``"local"`` (the default of every policy)
    Decide in-process, in a private :class:`resilience.MemoryStore`:

    - *rate limiter*: each quota is scaled to a **fair share**. Deciders announce themselves
      through the store at most every ``presence_interval`` seconds per limiter and key, in
      the background, never on the decision path; each announcement returns the live deciders
      ``n`` and this decider's rank ``i`` among them (ids sorted; ids start with their
      creation time, so a newcomer ranks last). Decider ``i`` of ``n`` takes
      ``limit // n``, plus 1 if ``i < limit % n``: every decider that saw the same set takes a
      distinct rank, so the shares add up to exactly ``limit`` (with more deciders than the
      limit, some shares are 0: those deciders refuse, :class:`resilience.RateLimited`, as
      over quota). A key this process never saw announced uses the largest set it saw for
      any key (alone if none). The fleet as a whole therefore admits at most ``limit`` per
      window during the outage (plus what was admitted in the shared window just before it).
      A request whose cost exceeds the share is refused with the window as ``retry_after``.
    - *circuit breaker*: a local breaker with the same thresholds; a deadline the policy
      already holds locally stays in force.
    - *retry budget*: a local budget with the same ratio.
``"allow"``
    Admit (fail open): the limiter admits, the breaker lets the call through, the budget
    grants the retry. Each such decision is counted (:attr:`FallbackStore.stats` and the
    ``resilience`` logger).
``"deny"``
    Fail closed: re-raise :class:`resilience.StoreUnavailable`.

Only outages fall back: :class:`resilience.StoreError` (Redis up but refusing the decision, e.g.
a key of another type) propagates in every mode.

Every decision the fallback takes suspends the calling task once (``asyncio.sleep(0)``): a
degraded store fails fast without touching Redis, so a tight loop of decisions would otherwise
never yield, stalling every other task, the store's recovery probe included. Decisions that
Redis takes suspend anyway (a round trip): the healthy path pays nothing.

Local decisions are **never replayed** into Redis once it answers again: nothing is counted
twice. The next decision after recovery is shared again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

from resilience import telemetry
from resilience.errors import StoreUnavailable
from resilience.stores.base import (
    BreakerAction,
    BreakerEventCallback,
    BreakerOutcomeName,
    BreakerReply,
    BreakerSpec,
    BudgetResult,
    Presence,
    Store,
    WindowLimit,
    WindowResult,
)
from resilience.stores.memory import MemoryStore

__all__ = [
    "FALLBACK_MODES",
    "FallbackMode",
    "FallbackStore",
    "check_fallback",
    "fair_share",
    "with_fallback",
]

logger = logging.getLogger("resilience")

#: The fallback modes (their names are part of the public contract).
FallbackMode = Literal["local", "allow", "deny"]
FALLBACK_MODES: tuple[FallbackMode, ...] = ("local", "allow", "deny")

#: Default seconds between two presence announcements of one decider for one key.
PRESENCE_INTERVAL = 2.0
_MAX_TRACKED_KEYS = 10_000
_ALONE = Presence(1, 0)
_WARN_EVERY = 10.0  # seconds between two "store unavailable" warnings of one FallbackStore
_yield = asyncio.sleep  # ``await _yield(0)``: suspend once, the cheapest yield to the loop


def fair_share(limit: int, presence: Presence) -> int:
    """Decider ``presence.rank`` of ``presence.members``'s share of ``limit``: ``limit // n``,
    plus 1 for the first ``limit % n`` ranks. Over ranks ``0..n-1`` the shares add up to
    ``limit``."""
    n = max(presence.members, 1)
    rank = min(max(presence.rank, 0), n - 1)
    return limit // n + (1 if rank < limit % n else 0)


def _as_presence(p: object) -> Presence:
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


def _member_id() -> str:
    """A decider id: creation time (us, so newcomers sort last), pid and a random part, all
    fixed-width lowercase hex (the same order under any collation)."""
    return f"{time.time_ns() // 1000:014x}{os.getpid() & 0xFFFFFFFF:08x}{secrets.token_hex(4)}"


def check_fallback(value: object, param: str = "fallback") -> FallbackMode:
    """``value`` as a fallback mode, or ``TypeError``/``ValueError`` naming ``param``."""
    if not isinstance(value, str):
        raise TypeError(f"{param} must be one of {FALLBACK_MODES}, got {type(value).__name__}")
    if value not in FALLBACK_MODES:
        raise ValueError(f"{param} must be one of {FALLBACK_MODES}, got {value!r}")
    return value


def _no_op() -> None:
    return None


_wrapped: weakref.WeakKeyDictionary[Any, dict[str, FallbackStore]] = weakref.WeakKeyDictionary()


def with_fallback(store: Store, fallback: object = "local") -> Store:
    """``store`` wrapped in a :class:`FallbackStore` applying ``fallback`` (validated).

    A :class:`resilience.MemoryStore` never fails, so it is returned as is. Wrapping the same
    store with the same mode twice returns the same :class:`FallbackStore` (policies built on
    one store can still be combined, e.g. with :func:`resilience.all_of`); wrapping a
    :class:`FallbackStore` re-wraps its primary with the new mode.
    """
    mode = check_fallback(fallback)
    if isinstance(store, FallbackStore):
        if store.mode == mode:
            return store
        store = store.primary
    if isinstance(store, MemoryStore):
        return store
    try:
        per_mode = _wrapped.setdefault(store, {})
    except TypeError:  # unhashable or not weak-referenceable: no sharing
        return FallbackStore(store, mode)
    fs = per_mode.get(mode)
    if fs is None:
        fs = per_mode[mode] = FallbackStore(store, mode)
    return fs


class FallbackStore:
    """A store that decides through ``primary`` and, when it is unavailable, by ``mode``.

    See the module docs for the semantics of each mode.

    Args:
        primary: the shared store (usually a :class:`resilience.RedisStore`).
        mode: ``"local"``, ``"allow"`` or ``"deny"``.
        presence_interval: seconds between two presence announcements per limiter key
            (the announcements' TTL is three times this).
        local: the in-process store used by ``"local"`` (default: a new
            :class:`resilience.MemoryStore`).

    Attributes:
        stats: decisions taken by the fallback, by operation (e.g. ``"window_acquire"``).
    """

    def __init__(
        self,
        primary: Store,
        mode: FallbackMode = "local",
        *,
        presence_interval: float = PRESENCE_INTERVAL,
        local: MemoryStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(primary, FallbackStore):
            raise TypeError("primary must not itself be a FallbackStore")
        if not callable(getattr(primary, "window_acquire", None)):
            raise TypeError(
                f"primary must implement the Store protocol, got {type(primary).__name__}"
            )
        self.primary = primary
        self.mode = check_fallback(mode, "mode")
        if (
            isinstance(presence_interval, bool)
            or not isinstance(presence_interval, (int, float))
            or not presence_interval > 0
        ):
            raise ValueError(
                f"presence_interval must be a positive number of seconds, got {presence_interval!r}"
            )
        self.presence_interval = float(presence_interval)
        self.local = local if local is not None else MemoryStore()
        self.label: str = primary.label
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._pid = os.getpid()
        self._member = _member_id()
        self._shares: dict[tuple[tuple[str, ...], str], tuple[Presence, ...]] = {}
        self._next_announce: dict[tuple[tuple[str, ...], str], float] = {}
        self._due: dict[tuple[int, str], tuple[Sequence[WindowLimit], float]] = {}
        self._seen: dict[tuple[tuple[str, ...], str], float] = {}
        self._fleet = _ALONE  # the reading with the most deciders seen for any key
        self._tasks: set[asyncio.Task[None]] = set()
        self._down = False
        self._warned = -1e18  # when the last "unavailable" warning was logged

    def __repr__(self) -> str:
        return f"FallbackStore({self.primary!r}, mode={self.mode!r})"

    async def aclose(self) -> None:
        """Cancel pending announcements and close the primary store."""
        for t in list(self._tasks):
            t.cancel()
        close = getattr(self.primary, "aclose", None)
        if close is not None:
            await close()

    # ------------------------------------------------------------------ bookkeeping

    def _fell_back(self, op: str, exc: StoreUnavailable) -> None:
        self.stats[op] += 1
        if not self._down:
            self._down = True
            # A slow Redis alternates shared decisions and timed-out ones: one warning per
            # interval, the other switches at DEBUG (every fallback is counted anyway).
            now = self._clock()
            quiet = now < self._warned + _WARN_EVERY
            if not quiet:
                self._warned = now
            logger.log(
                logging.DEBUG if quiet else logging.WARNING,
                "store %s unavailable: %s decisions use fallback %r",
                self.label,
                op,
                self.mode,
                extra={"store": self.label, "fallback": self.mode},
            )
        telemetry.store_fallback(store=self.label, operation=op, mode=self.mode)

    def _up(self) -> None:
        self._down = False

    # ------------------------------------------------------------------ presence

    def _maybe_announce(self, limits: Sequence[WindowLimit], key: str) -> None:
        if self._down:
            return
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
        self._next_announce[ck] = now + self.presence_interval
        self._remember_due(limits, key, now + self.presence_interval)
        announce = getattr(self.primary, "presence_announce", None)
        if announce is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._announce(announce, ck))
        except RuntimeError:  # pragma: no cover - no running loop
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remember_due(self, limits: Sequence[WindowLimit], key: str, due: float) -> None:
        if len(self._due) >= _MAX_TRACKED_KEYS:
            self._due.clear()
        self._due[(id(limits), key)] = (limits, due)

    async def _announce(self, announce: Any, ck: tuple[tuple[str, ...], str]) -> None:
        names, key = ck
        ttl_us = int(self.presence_interval * 3 * 1e6)
        if self._pid != os.getpid():  # a forked child is another decider
            self._pid = os.getpid()
            self._member = _member_id()
        try:
            reply = await announce(names, key, self._member, ttl_us)
            seen = tuple(_as_presence(p) for p in reply)
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
        fresh = now - self._seen.get(ck, -1e18) < 3 * self.presence_interval
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
            if p.members > self._fleet.members:
                self._fleet = p

    def presence(self, limits: Sequence[WindowLimit], key: str) -> tuple[Presence, ...]:
        """Per limit, the deciders last seen sharing it for ``key`` and this one's rank."""
        seen = self._shares.get((tuple(lim.name for lim in limits), key))
        if seen is None or len(seen) != len(limits):
            return (self._fleet,) * len(limits)
        return seen

    def deciders(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """Per limit, the number of deciders last seen sharing it for ``key`` (at least 1)."""
        return tuple(max(p.members, 1) for p in self.presence(limits, key))

    def share(self, limits: Sequence[WindowLimit], key: str) -> tuple[WindowLimit, ...]:
        """The limits this decider applies alone while the store is down (its fair share,
        see :func:`fair_share`; 0 for some deciders when there are more than the limit)."""
        return tuple(
            WindowLimit(lim.name, fair_share(lim.limit, p), lim.window_us)
            for lim, p in zip(limits, self.presence(limits, key), strict=True)
        )

    # ------------------------------------------------------------------ window

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`; falls back by mode."""
        self._maybe_announce(limits, key)
        try:
            r = await self.primary.window_acquire(limits, key, costs, max_wait_us)
        except StoreUnavailable as exc:
            await _yield(0)  # before deciding: a cancellation here leaves nothing behind
            if self.mode == "deny":
                raise
            self._fell_back("window_acquire", exc)
            if self.mode == "allow":
                return WindowResult(True, 0, 0, "A")
            shares = self.share(limits, key)
            if any(c > s.limit for c, s in zip(costs, shares, strict=True)):
                return WindowResult(False, 0, max(s.window_us for s in shares), "")
            lr = await self.local.window_acquire(shares, key, costs, max_wait_us)
            return lr._replace(token="L" + lr.token) if lr.allowed else lr
        if self._down:
            self._up()
        return r

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_release` (routed by token)."""
        if token.startswith("L"):
            await self.local.window_release(self.share(limits, key), key, costs, token[1:])
        elif token != "A":
            await self.primary.window_release(limits, key, costs, token)

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_penalize`.

        The penalty is also kept locally, so it stays in force if the store fails later.
        """
        await self.local.window_penalize(self.share(limits, key), key, duration_us)
        try:
            await self.primary.window_penalize(limits, key, duration_us)
        except StoreUnavailable as exc:
            await _yield(0)
            if self.mode == "deny":
                raise
            self._fell_back("window_penalize", exc)

    # ------------------------------------------------------------------ breaker

    async def breaker_acquire(self, spec: BreakerSpec, key: str) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_acquire`; falls back by mode."""
        try:
            r = await self.primary.breaker_acquire(spec, key)
        except StoreUnavailable as exc:
            await _yield(0)  # before deciding: a cancellation here leaves nothing behind
            if self.mode == "deny":
                raise
            self._fell_back("breaker_acquire", exc)
            if self.mode == "allow":
                return BreakerReply("closed", 0, 0, "allow", "", "", False, 0)
            lr = await self.local.breaker_acquire(spec, key)
            return lr._replace(token="L" + lr.token) if lr.token else lr
        if self._down:
            self._up()
        return r

    async def breaker_record(
        self,
        spec: BreakerSpec,
        key: str,
        outcome: BreakerOutcomeName,
        gen: int,
        token: str,
        hint_us: int,
    ) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_record`.

        The outcome of a locally granted probe is recorded locally. Other outcomes go to the
        primary; when it is down they are recorded in the local breaker (``"local"``),
        dropped (``"allow"``: reported as stale) or re-raised (``"deny"``).
        """
        if token.startswith("L"):
            return await self.local.breaker_record(spec, key, outcome, gen, token[1:], hint_us)
        try:
            r = await self.primary.breaker_record(spec, key, outcome, gen, token, hint_us)
        except StoreUnavailable as exc:
            if self.mode == "deny":
                await _yield(0)
                raise
            self._fell_back("breaker_record", exc)
            if self.mode == "allow":
                await _yield(0)
                return BreakerReply("closed", gen, 0, "", "", "", True, 0)
            lr = await self.local.breaker_record(spec, key, outcome, gen, "", hint_us)
            await _yield(0)  # after recording: the outcome is kept even if cancelled here
            return lr
        if self._down:
            self._up()
        return r

    async def breaker_admin(
        self, spec: BreakerSpec, key: str, action: BreakerAction, duration_us: int
    ) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_admin`.

        Always applied to the local breaker too (so an operator's ``open`` holds in this
        process during an outage); an unavailable primary raises except in ``"local"``.
        """
        local = await self.local.breaker_admin(spec, key, action, duration_us)
        try:
            return await self.primary.breaker_admin(spec, key, action, duration_us)
        except StoreUnavailable:
            if self.mode != "local":
                raise
            return local

    def breaker_subscribe(self, callback: BreakerEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_subscribe`: the primary's
        transitions (a primary without the method: none)."""
        subscribe = getattr(self.primary, "breaker_subscribe", None)
        if subscribe is None:
            return _no_op
        unsubscribe: Callable[[], None] = subscribe(callback)
        return unsubscribe

    # ------------------------------------------------------------------ budget

    async def budget_deposit(self, name: str, count: int, window_s: int) -> None:
        """See :meth:`resilience.stores.base.BudgetOps.budget_deposit`; falls back by mode."""
        try:
            await self.primary.budget_deposit(name, count, window_s)
        except StoreUnavailable as exc:
            if self.mode == "deny":
                await _yield(0)
                raise
            self._fell_back("budget_deposit", exc)
            if self.mode == "local":
                await self.local.budget_deposit(name, count, window_s)
            await _yield(0)  # after counting: the deposit is kept even if cancelled here

    async def budget_withdraw(
        self, name: str, deposits: int, ratio_ppm: int, reserve: int, window_s: int
    ) -> BudgetResult:
        """See :meth:`resilience.stores.base.BudgetOps.budget_withdraw`; falls back by mode."""
        try:
            return await self.primary.budget_withdraw(name, deposits, ratio_ppm, reserve, window_s)
        except StoreUnavailable as exc:
            await _yield(0)  # before deciding: a cancellation here leaves nothing behind
            if self.mode == "deny":
                raise
            self._fell_back("budget_withdraw", exc)
            if self.mode == "allow":
                return BudgetResult(True, 0, 0)
            return await self.local.budget_withdraw(name, deposits, ratio_ppm, reserve, window_s)

    # ------------------------------------------------------------------ presence

    async def presence_announce(
        self, names: Sequence[str], key: str, member: str, ttl_us: int
    ) -> tuple[Presence, ...]:
        """See :meth:`resilience.stores.base.PresenceOps.presence_announce` (no fallback)."""
        return await self.primary.presence_announce(names, key, member, ttl_us)
