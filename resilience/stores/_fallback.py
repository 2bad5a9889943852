"""What a policy does when its shared store (Redis) cannot decide: ``local``, ``allow``, ``deny``.

:class:`FallbackStore` wraps a store and implements the same protocol by delegating every
decision to it. When the store raises :class:`resilience.StoreUnavailable` (Redis down,
hanging, failing over; see :mod:`resilience.stores.redis._health` for how fast that happens),
the fallback mode decides instead:

``"local"`` (the default of every policy)
    Decide in-process, in a private :class:`resilience.MemoryStore`:

    - *rate limiter*: each quota is scaled to this decider's **fair share**
      (:mod:`resilience.stores._fleet`): decider ``i`` of the ``n`` last seen sharing it
      takes ``limit // n``, plus 1 if ``i < limit % n``, so the shares of a fleet add up to
      exactly ``limit`` (some are 0 when there are more deciders than the limit: those refuse,
      :class:`resilience.RateLimited`, as over quota). A request whose cost exceeds the share
      is refused with the window as ``retry_after``.
    - *circuit breaker*: a local breaker with the same thresholds; a deadline the policy
      already holds locally stays in force.
    - *retry budget*: a local budget with the same ratio.
    - *concurrency limit*: a fair share of ``max_in_flight`` (see
      :mod:`resilience.stores._fallback_concurrency`).
``"allow"``
    Admit (fail open): the limiter admits, the breaker lets the call through, the budget
    grants the retry.
``"deny"``
    Fail closed: re-raise :class:`resilience.StoreUnavailable`.

Each decision ``"local"`` or ``"allow"`` takes is counted (:attr:`FallbackStore.stats`), logged
(the ``resilience`` logger, once per outage) and reported to the store's observers
(:meth:`resilience.stores.StoreEvents.on_fallback`; the policies forward it to telemetry): a
FallbackStore shares its primary's :class:`~resilience.stores.StoreObservers`.

Only outages fall back: :class:`resilience.StoreError` (Redis up but refusing the decision, e.g.
a key of another type) propagates in every mode.

Every decision the fallback takes suspends the calling task once (``asyncio.sleep(0)``): a
degraded store fails fast without touching Redis, so a tight loop of decisions would otherwise
never yield, stalling every other task, the store's recovery probe included. Decisions that
Redis takes suspend anyway (a round trip): the healthy path pays nothing.

Local decisions are **never replayed** into Redis once it answers again: nothing is counted
twice. The next decision after recovery is shared again.

(A little over 400 lines: :class:`FallbackStore` implements every operation of the protocol,
each with its three modes side by side; split, the modes of one operation would be apart.)
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

from resilience.errors import StoreUnavailable
from resilience.stores._events import StoreObservers
from resilience.stores._fallback_concurrency import FallbackConcurrency
from resilience.stores._fallback_registry import FallbackRegistry
from resilience.stores._fleet import PRESENCE_INTERVAL, FleetView, fair_share
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
    takes_merge,
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

# window_acquire's optional keyword (see WindowOps.window_acquire, "Merging"): passed only to
# a primary that takes it.
_MERGE: dict[str, bool] = {"merge": True}
_ALONE: dict[str, bool] = {}

logger = logging.getLogger("resilience")

#: The fallback modes (their names are part of the public contract).
FallbackMode = Literal["local", "allow", "deny"]
FALLBACK_MODES: tuple[FallbackMode, ...] = ("local", "allow", "deny")

_WARN_EVERY = 10.0  # seconds between two "store unavailable" warnings of one FallbackStore
_yield = asyncio.sleep  # ``await _yield(0)``: suspend once, the cheapest yield to the loop


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

    A store whose decisions are local (:attr:`resilience.stores.Store.decides_locally`, e.g.
    :class:`resilience.MemoryStore`) never fails, so it is returned as is. Wrapping the same
    store with the same mode twice returns the same :class:`FallbackStore` (policies built on
    one store can still be combined, e.g. with :func:`resilience.all_of`); wrapping a
    :class:`FallbackStore` re-wraps its primary with the new mode.
    """
    mode = check_fallback(fallback)
    if isinstance(store, FallbackStore):
        if store.mode == mode:
            return store
        store = store.primary
    if getattr(store, "decides_locally", False):
        return store
    try:
        per_mode = _wrapped.setdefault(store, {})
    except TypeError:  # unhashable or not weak-referenceable: no sharing
        return FallbackStore(store, mode)
    fs = per_mode.get(mode)
    if fs is None:
        fs = per_mode[mode] = FallbackStore(store, mode)
    return fs


class FallbackStore(FallbackConcurrency, FallbackRegistry):
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
        fleet: this decider's view of who shares each quota (the fair shares of ``"local"``).
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
        self._merges = takes_merge(primary)  # see WindowOps.window_acquire, "Merging"
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
        self.fleet = FleetView(
            getattr(primary, "presence_announce", None), self.presence_interval, clock
        )
        # Events about the primary's availability, this store's included, go to one place.
        observers = getattr(primary, "observers", None)
        self._observers = observers if isinstance(observers, StoreObservers) else StoreObservers()
        self._decides_locally = bool(getattr(primary, "decides_locally", False))
        self._tag: Callable[[str, str], str] | None = getattr(primary, "breaker_tag", None)
        self._clock = clock
        self._down = False
        self._warned = -1e18  # when the last "unavailable" warning was logged

    def __repr__(self) -> str:
        return f"FallbackStore({self.primary!r}, mode={self.mode!r})"

    @property
    def decides_locally(self) -> bool:
        """The primary's (see :attr:`resilience.stores.Store.decides_locally`)."""
        return self._decides_locally

    @property
    def observers(self) -> StoreObservers:
        """The primary's observers (see :attr:`resilience.stores.Store.observers`): they hear
        about its degraded mode and about the decisions this fallback takes in its place."""
        return self._observers

    async def aclose(self) -> None:
        """Cancel pending announcements and close the primary store."""
        self.fleet.cancel()
        close = getattr(self.primary, "aclose", None)
        if close is not None:
            await close()

    # ------------------------------------------------------------------ bookkeeping

    def _fell_back(self, op: str, exc: StoreUnavailable) -> None:
        self.stats[op] += 1
        if not self._down:
            self._down = True
            self.fleet.down()
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
        self._observers.fallback(self.label, op, self.mode)

    def _up(self) -> None:
        self._down = False
        self.fleet.up()

    # ------------------------------------------------------------------ presence

    def presence(self, limits: Sequence[WindowLimit], key: str) -> tuple[Presence, ...]:
        """Per limit, the deciders last seen sharing it for ``key`` and this one's rank."""
        return self.fleet.presence(limits, key)

    def deciders(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """Per limit, the number of deciders last seen sharing it for ``key`` (at least 1)."""
        return tuple(max(p.members, 1) for p in self.fleet.presence(limits, key))

    def share(self, limits: Sequence[WindowLimit], key: str) -> tuple[WindowLimit, ...]:
        """The limits this decider applies alone while the store is down (its fair share,
        see :func:`fair_share`; 0 for some deciders when there are more than the limit)."""
        return self.fleet.share(limits, key)

    # ------------------------------------------------------------------ window

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
        *,
        merge: bool = False,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`; falls back by mode."""
        self.fleet.announce(limits, key)  # in the background, also while down (see _fleet)
        try:
            r = await self.primary.window_acquire(
                limits, key, costs, max_wait_us, **(_MERGE if merge and self._merges else _ALONE)
            )
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
            lr = await self.local.window_acquire(shares, key, costs, max_wait_us, merge=merge)
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

    async def window_learn(
        self, limits: Sequence[WindowLimit], key: str, limit: int, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_learn`. Kept locally too, scaled
        to this process's share, so it holds if the store fails later."""
        shares = self.share(limits, key)
        pairs = zip(shares, limits, strict=True)
        local = max(1, min(limit * s.limit // lim.limit for s, lim in pairs))
        await self.local.window_learn(shares, key, local, duration_us)
        try:
            await self.primary.window_learn(limits, key, limit, duration_us)
        except StoreUnavailable as exc:
            await _yield(0)
            if self.mode == "deny":
                raise
            self._fell_back("window_learn", exc)

    async def window_settle(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        token: str,
        costs: Sequence[int],
        actual: Sequence[int],
    ) -> bool:
        """See :meth:`resilience.stores.base.WindowOps.window_settle` (routed by token: an
        admission of ``allow`` mode is in no log, so it settles nothing)."""
        if token.startswith("L"):
            shares = self.share(limits, key)
            return await self.local.window_settle(shares, key, token[1:], costs, actual)
        if token == "A":
            return False
        return await self.primary.window_settle(limits, key, token, costs, actual)

    async def window_advance(
        self, limits: Sequence[WindowLimit], key: str, token: str, costs: Sequence[int]
    ) -> int:
        """See :meth:`resilience.stores.base.WindowOps.window_advance` (routed by token)."""
        if token.startswith("L"):
            return await self.local.window_advance(self.share(limits, key), key, token[1:], costs)
        if token == "A":
            return -1
        return await self.primary.window_advance(limits, key, token, costs)

    def window_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.WindowEvents.window_tag` (the primary's; ``""``
        when it has no window events)."""
        tag = getattr(self.primary, "window_tag", None)
        return "" if tag is None else str(tag(name, key))

    def window_subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.WindowEvents.window_subscribe` (the primary's)."""
        subscribe = getattr(self.primary, "window_subscribe", None)
        if subscribe is None:
            return lambda: None
        unsubscribe: Callable[[], None] = subscribe(callback)
        return unsubscribe

    async def window_paused(self, limits: Sequence[WindowLimit], key: str) -> int:
        """See :meth:`resilience.stores.base.WindowOps.window_paused`: the shared store's
        answer; while it is unreachable, the penalties this process kept locally (a read
        never raises :class:`resilience.StoreUnavailable`, in any mode)."""
        try:
            return await self.primary.window_paused(limits, key)
        except StoreUnavailable:
            await _yield(0)
            return await self.local.window_paused(self.share(limits, key), key)

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

    def breaker_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_tag`: the primary's (a primary
        without the method pushes no tagged messages: ``""``)."""
        return self._tag(name, key) if self._tag is not None else ""

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
