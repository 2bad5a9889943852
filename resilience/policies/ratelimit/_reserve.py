"""Reserve, settle, refund: admit an estimate, then re-weigh it to what the call really cost.

A token quota is billed on the actual usage, known only after the response (``usage`` of the
AI SDKs). :meth:`SlidingWindowLimiter.reserve` admits the estimate as one entry; the caller
settles it to the actual cost (:meth:`Reservation.settle`), which the store re-weighs in one
atomic step (:meth:`resilience.stores.base.WindowOps.window_settle`): the entry keeps its slot
time, so the window stays exact.

- **Settle down** frees the difference at once: the callers that wait for a slot of the same
  quota and key are woken and move their reservation to the earliest slot that is safe now
  (:meth:`~resilience.stores.base.WindowOps.window_advance`): those of this process directly,
  those of other processes through the store's window events
  (:class:`~resilience.stores.base.WindowEvents`, Redis pub/sub; best effort: a lost message
  leaves a waiter on its slot). New requests anywhere see the freed units at once.
- **Settle up** is never refused (the units were spent), even past the limit: later
  admissions wait until the entry leaves the window.
- **Refund** (a settle to 0) when the block is left with an exception that proves the upstream
  did not bill the attempt (:func:`not_billed`); any other exit without a settle, a
  cancellation included, keeps the estimate. A settle after the entry left the window is a
  no-op; an entry never leaks (it expires with its window).
- **Streaming**: settle when the stream ends, from the final event's usage; a stream abandoned
  midway keeps its estimate.

As a pipeline policy (``settle=`` option): each attempt reserves its estimate (the ``cost``
option), runs the call, and settles to ``settle(result)``; an attempt that fails "not billed"
is refunded, so each retry attempt carries its own entry.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from resilience.errors import (
    CircuitOpen,
    RateLimited,
    ResilienceError,
    library_error,
)
from resilience.http import classify
from resilience.pipeline import CallContext
from resilience.policies._validate import (
    MAX_LIMIT,
)
from resilience.stores.base import WindowLimit

if TYPE_CHECKING:
    from resilience.policies.ratelimit._reserving import Reserving

__all__ = ["Reservation", "Reserve", "SettleFn", "not_billed"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

#: The ``settle`` option: the actual cost of a call from its result (an int for one quota, a
#: mapping by limiter name for :func:`resilience.all_of`).
SettleFn = Callable[[Any], "int | Mapping[str, int]"]

# Callers of this process waiting for a reserved slot, by (store, limit name, key): a settle
# down or a refund wakes those of its quotas and key (see the module docs).
_waiting: dict[tuple[int, str, str], set[asyncio.Event]] = {}


def _store_id(store: object) -> int:
    return id(getattr(store, "primary", store))  # a FallbackStore's waiters are its primary's


# Waiters of other processes hear of freed units through the store's window events
# (WindowEvents, Redis pub/sub): per store, one subscription for the life of its loop, and
# the tags of the (name, key) pairs waited for.
_listening: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()
_tags: dict[tuple[int, str], tuple[str, str]] = {}


def _listen(store: Any, sid: int) -> None:
    loop = asyncio.get_running_loop()
    try:
        if _listening.get(store) is loop:
            return
        _listening[store] = loop
    except TypeError:  # not weak-referenceable: no events
        return

    connected = [False]

    def heard(tag: str) -> None:
        if not tag and not connected[0]:  # the subscription is established: nothing lost yet
            connected[0] = True
            return
        if not tag:  # re-established: messages may have been lost, every waiter asks
            targets = [n for n in _waiting if n[0] == sid]
        else:
            nk = _tags.get((sid, tag))
            targets = [] if nk is None else [(sid, nk[0], nk[1])]
        for n in targets:
            for ev in _waiting.get(n, ()):
                ev.set()

    store.window_subscribe(heard)


def _wake(policy: Reserving, key: str, names: list[str]) -> None:
    sid = _store_id(policy.store)
    for name in names:
        for ev in _waiting.get((sid, name, key), ()):
            ev.set()


def not_billed(exc: BaseException) -> bool:
    """Whether ``exc`` proves that the upstream did not bill the attempt (so it is refunded).

    ``True`` for what :func:`resilience.http.classify` says was not processed (a 429, a 529, a
    connection refused or not made before the request was sent, from any client or AI SDK: the
    SDKs' and httpx's connection errors count although they are not ``ConnectionError``
    subclasses), and for a refusal of an inner policy (:class:`resilience.CircuitOpen`,
    :class:`resilience.RateLimited`): the request was never sent. ``False`` for anything
    else, a timeout after the request was sent and ``asyncio.CancelledError`` included.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(library_error(exc), (CircuitOpen, RateLimited)):
        return True
    c = classify(exc)
    return c is not None and c.fault is not None and not c.processed


# "Wait as long as it takes" for a store (as in _limiter.py): 10**15 us, ~31 years.
_FOREVER_US = 10**15


def _units(param: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{param} must be an int, got {type(v).__name__}")
    if not 0 <= v <= MAX_LIMIT:
        raise ValueError(f"{param} must be >= 0 and <= MAX_LIMIT = 2**40, got {v}")
    return v


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _complete(aw: Awaitable[T]) -> T:
    """Await ``aw``; a cancellation of the caller does not stop it (it runs to completion in
    the background, and ``CancelledError`` propagates at once)."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


class Reservation:
    """An admitted estimate, to settle to the actual cost (see
    :meth:`SlidingWindowLimiter.reserve <resilience.SlidingWindowLimiter.reserve>`).

    Attributes:
        estimate: the units reserved: an int for a single limiter, a dict by limiter name
            for :func:`resilience.all_of`.
        key: the key the units were reserved under.
    """

    __slots__ = (
        "_current",
        "_limits",
        "_lock",
        "_policy",
        "_token",
        "estimate",
        "key",
        "settled",
    )

    def __init__(
        self,
        policy: Reserving,
        limits: tuple[WindowLimit, ...],
        key: str,
        costs: tuple[int, ...],
        token: str,
    ) -> None:
        self._policy = policy
        self._limits = limits  # as admitted (an adaptive guard may change the policy's)
        self.key = key
        self._token = token
        self._current = costs
        self._lock = asyncio.Lock()
        #: Whether :meth:`settle` (or :meth:`refund`) was called.
        self.settled = False
        self.estimate: int | dict[str, int] = self._shape(costs)

    def _shape(self, costs: tuple[int, ...]) -> int | dict[str, int]:
        if self._policy._by_name:
            return {lim.name: c for lim, c in zip(self._limits, costs, strict=True)}
        return costs[0]

    @property
    def cost(self) -> int | dict[str, int]:
        """The units charged now: the estimate, or the last settled cost."""
        return self._shape(self._current)

    def _actual(self, actual: int | Mapping[str, int]) -> tuple[int, ...]:
        limits = self._limits
        if not self._policy._by_name:
            return (_units("actual", actual),)
        if not isinstance(actual, Mapping):
            raise TypeError(
                "actual must be a mapping by limiter name for all_of (e.g. "
                f'{{"{limits[0].name}": 1200}}), got {type(actual).__name__}: an int would '
                "bill every quota the same"
            )
        unknown = set(actual) - {lim.name for lim in limits}
        if unknown:
            raise ValueError(f"actual names unknown limiters: {sorted(unknown)}")
        return tuple(
            _units(f"actual[{lim.name!r}]", actual[lim.name]) if lim.name in actual else c
            for lim, c in zip(limits, self._current, strict=True)
        )

    async def settle(self, actual: int | Mapping[str, int]) -> None:
        """Re-weigh the reservation to ``actual`` units, keeping its slot time.

        ``actual``: an int (``0 <= actual <= 2**40``) for a single limiter; for
        :func:`resilience.all_of` a mapping by limiter name, where the quotas left out keep
        their reservation (an int is refused with ``TypeError``: it would bill every quota the
        same). A settle above the estimate is never refused, even past the limit; one below
        frees the difference at once (waiting callers of this process are woken). May be
        called again (each call re-weighs from the last). A no-op once the entry has left its
        window. The store's answer is awaited even if the caller is cancelled meanwhile; a
        store that cannot be reached leaves the estimate (logged), never raises.
        """
        new = self._actual(actual)
        self.settled = True
        async with self._lock:
            old = self._current
            if new == old:
                return
            await _complete(self._apply(old, new))

    async def refund(self) -> None:
        """Give the whole reservation back (settle every quota to 0)."""
        self.settled = True
        async with self._lock:
            old = self._current
            if not any(old):
                return
            await _complete(self._apply(old, (0,) * len(old)))

    async def _apply(self, old: tuple[int, ...], new: tuple[int, ...]) -> None:
        p = self._policy
        try:
            await p.store.window_settle(self._limits, self.key, self._token, old, new)
        except ResilienceError as exc:
            logger.warning("rate limiter %r: could not settle a reservation: %s", p.name, exc)
            return
        self._current = new
        down = [lim.name for lim, a, b in zip(self._limits, old, new, strict=True) if b < a]
        if down:
            _wake(p, self.key, down)

    def __repr__(self) -> str:
        return f"Reservation(estimate={self.estimate!r}, cost={self.cost!r}, key={self.key!r})"


class Reserve:
    """The context manager :meth:`reserve` returns: ``async with lim.reserve(...) as r``."""

    __slots__ = ("_costs", "_ctx", "_key", "_max_wait_us", "_policy", "reservation")

    def __init__(
        self,
        policy: Reserving,
        key: str,
        costs: tuple[int, ...],
        max_wait_us: int,
        ctx: CallContext | None = None,
    ) -> None:
        self._policy = policy
        self._key = key
        self._costs = costs
        self._max_wait_us = max_wait_us
        self._ctx = ctx
        self.reservation: Reservation | None = None

    async def __aenter__(self) -> Reservation:
        p = self._policy
        _, token, limits = await p._take(self._key, self._costs, self._max_wait_us, self._ctx)
        self.reservation = Reservation(p, limits, self._key, self._costs, token)
        return self.reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        r = self.reservation
        if exc is not None and r is not None and not r.settled and not_billed(exc):
            await r.refund()  # runs to its end even if this task is cancelled meanwhile


async def wait_slot(
    p: Reserving,
    limits: tuple[WindowLimit, ...],
    key: str,
    costs: tuple[int, ...],
    token: str,
    wait_us: int,
) -> None:
    """Sleep until the reserved slot (``wait_us`` from now); when a settle of this process
    frees units of these quotas, move the reservation earlier (``window_advance``) and sleep
    until the new slot. Every waiter of a limiter sleeps here: a plain ``acquire`` as well as
    a ``reserve``."""
    loop = asyncio.get_running_loop()
    due = loop.time() + wait_us / 1e6
    woken = asyncio.Event()
    sid = _store_id(p.store)
    names = [(sid, lim.name, key) for lim in limits]
    for n in names:
        _waiting.setdefault(n, set()).add(woken)
    tag_of = getattr(p.store, "window_tag", None)
    tags = [tag_of(lim.name, key) for lim in limits] if tag_of is not None else []
    tags = [t for t in tags if t]
    if tags:
        for lim, t in zip(limits, tags, strict=False):
            _tags[(sid, t)] = (lim.name, key)
        _listen(p.store, sid)
    try:
        while wait_us > 0:
            try:
                await asyncio.wait_for(woken.wait(), wait_us / 1e6)
            except asyncio.TimeoutError:
                return
            woken.clear()
            try:
                left = await p.store.window_advance(limits, key, token, costs)
            except ResilienceError:
                left = -1
            if left < 0:  # the store cannot tell: keep the slot we had
                await asyncio.sleep(max(due - loop.time(), 0.0))
                return
            wait_us = left
            due = loop.time() + wait_us / 1e6
    finally:
        for n in names:
            s = _waiting.get(n)
            if s is not None:
                s.discard(woken)
                if not s:
                    del _waiting[n]
        for lim, t in zip(limits, tags, strict=False):
            if (sid, lim.name, key) not in _waiting:
                _tags.pop((sid, t), None)
