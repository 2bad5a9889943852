"""Policies register themselves for the operator tools, and follow operators' holds.

**Registration** (:meth:`resilience.stores.base.RegistryOps.registry_put`): what exists in a
store (names, kinds, settings, keys seen) is written by the policies themselves, so
``resilience status`` never guesses from key names (escaped or hashed, grouped by tenant).
It costs a call nothing: a policy checks a set for the key (one lookup); a key new to this
process is queued, and one background task per store and event loop sends the queue, at most
once a second, one ``registry_put`` per policy (its settings and the new keys). A policy's
first key also registers its name, so each ``(kind, name)`` is written once per process
(again only for new keys, or after :data:`MAX_TRACKED_KEYS` keys, when the set is cleared).
A registration that fails is logged once and dropped: it never fails or delays a call.

**Holds** (:meth:`~resilience.stores.base.RegistryOps.registry_hold`): an operator's pause
of a limiter *by name* holds every key, including keys first used after the pause, on every
Cluster slot: the hold is not a key's penalty but a flag each process keeps in memory. The
:class:`Board` of a store follows them: it reads the holds when a limiter first uses the
store, whenever the store announces a change (``registry_subscribe``: pub/sub on Redis,
``""`` on each (re)subscription) and every :data:`HOLD_REFRESH` seconds in any case (a
message lost while the subscription was down costs at most that). It sets each limiter's
``_held_until`` (a monotonic deadline, ``0.0`` when none), so the limiter's check is one
attribute read; a held call waits for the end of the hold within its wait bound, or is
refused with :class:`resilience.RateLimited`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Mapping, Set
from typing import Any

from resilience.errors import RateLimited

__all__ = [
    "FLUSH_INTERVAL",
    "HOLD_REFRESH",
    "MAX_TRACKED_KEYS",
    "Board",
    "Registered",
    "held_off",
    "note_breaker",
    "note_budget",
    "note_concurrency",
    "note_limiter",
]

logger = logging.getLogger("resilience")

#: Seconds between two registry writes of one store (batches of new keys).
FLUSH_INTERVAL = 1.0
#: Seconds between two reads of the holds even when no change is announced.
HOLD_REFRESH = 5.0
#: Keys a policy remembers having registered; beyond, the set is cleared (and keys resent).
MAX_TRACKED_KEYS = 10_000
# A held caller re-checks its limiter's hold this often (a resume ends its wait).
_HOLD_POLL = 0.25

_Entry = tuple[str, str]  # (kind, name)


class Registered:
    """What a policy keeps for the registry: the keys it registered in this process, and
    (limiters) the end of an operator's hold of its name (monotonic; ``0.0``: none)."""

    _seen: Set[str] = frozenset()
    _held_until: float = 0.0


class Board:
    """One store's registrations and holds in this process (see the module docs)."""

    def __init__(self, store: Any) -> None:
        self._store = weakref.ref(store)
        self._remote = not getattr(store, "decides_locally", False)
        self._pending: dict[_Entry, tuple[Mapping[str, int], set[str]]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._warned = False
        # Limiters following holds, with their names; the holds by name (monotonic ends).
        self._held: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()
        self.holds: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._follower: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._unsubscribe: Any = None

    # ------------------------------------------------------------------ registration

    def note(self, kind: str, name: str, settings: Mapping[str, int], key: str | None) -> None:
        """Queue ``(kind, name)`` with ``settings`` (and ``key``) for the next write."""
        entry = self._pending.get((kind, name))
        if entry is None:
            entry = self._pending[(kind, name)] = (settings, set())
        if key is not None:
            entry[1].add(key)
        if self._flushing is None or self._flushing.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - policies are called in a loop
                return
            self._flushing = loop.create_task(self._flush(), name="resilience:registry")

    async def _flush(self) -> None:
        while self._pending:
            store = self._store()
            if store is None:
                return
            batch, self._pending = self._pending, {}
            for (kind, name), (settings, keys) in batch.items():
                try:
                    await store.registry_put(kind, name, settings, sorted(keys))
                except Exception as exc:  # never fails a call: logged once, dropped
                    if not self._warned:
                        self._warned = True
                        logger.warning("registry: could not register %s %r: %s", kind, name, exc)
            del store
            await asyncio.sleep(FLUSH_INTERVAL)

    # ------------------------------------------------------------------ holds

    def follow(self, policy: Any, names: tuple[str, ...]) -> None:
        """Keep ``policy._held_until`` up to date with the holds of ``names``."""
        self._held[policy] = names
        self._apply(policy, names)
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._follower is not None and not self._follower.done():
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._loop = loop
        self._changed = asyncio.Event()
        store = self._store()
        subscribe = getattr(store, "registry_subscribe", None)
        changed = self._changed
        self._unsubscribe = subscribe(lambda _message: changed.set()) if subscribe else None
        self._follower = loop.create_task(self._follow(), name="resilience:holds")

    def _apply(self, policy: Any, names: tuple[str, ...]) -> None:
        holds = self.holds
        policy._held_until = max((holds.get(n, 0.0) for n in names), default=0.0)

    def _apply_all(self) -> None:
        for policy, names in list(self._held.items()):
            self._apply(policy, names)

    async def _follow(self) -> None:
        changed = self._changed
        assert changed is not None
        while self._held:
            store = self._store()
            if store is None:
                return
            changed.clear()
            read = getattr(store, "registry_holds", None)
            del store
            if read is not None:
                try:
                    holds = await read()
                except Exception:  # keep what we knew; the next refresh tries again
                    logger.debug("registry: could not read the holds", exc_info=True)
                else:
                    now = time.monotonic()
                    self.holds = {n: now + left / 1e6 for n, left in holds.items() if left > 0}
                    self._apply_all()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), HOLD_REFRESH if self._remote else None)


_boards: weakref.WeakKeyDictionary[Any, Board] = weakref.WeakKeyDictionary()


def board(store: Any) -> Board | None:
    """The :class:`Board` of ``store`` (``None``: the store has no registry)."""
    b = _boards.get(store)
    if b is None:
        if getattr(store, "registry_put", None) is None:
            return None
        try:
            b = _boards[store] = Board(store)
        except TypeError:  # not weak-referenceable: no registry
            return None
    return b


def _track(policy: Any, key: str) -> bool:
    """Add ``key`` to the policy's registered keys; ``True`` on the policy's first key."""
    seen = policy._seen
    if not isinstance(seen, set) or len(seen) >= MAX_TRACKED_KEYS:
        first = not isinstance(seen, set)
        policy._seen = seen = set()
    else:
        first = False
    seen.add(key)
    return first


def note_limiter(policy: Any, key: str) -> float:
    """A limiter (or :func:`resilience.all_of`) used ``key``: register it if new, follow the
    holds of its names on its first key. Returns the seconds left of its hold (0: none)."""
    if key not in policy._seen:
        first = _track(policy, key)
        b = board(policy.store)
        if b is not None:
            for lim, window in zip(policy._limits, policy._windows, strict=True):
                window_us = round(window * 1e6)
                settings = {
                    "limit": lim.limit,
                    "window_us": window_us,
                    "guard_us": max(lim.window_us - window_us, 0),
                }
                b.note("limiter", lim.name, settings, key)
            if first:
                b.follow(policy, tuple(lim.name for lim in policy._limits))
    until: float = policy._held_until
    if not until:
        return 0.0
    left = until - time.monotonic()
    if left <= 0:
        policy._held_until = 0.0
        return 0.0
    return left


async def held_off(policy: Any, key: str, max_wait_us: int) -> int:
    """Wait while the limiter's name is held (an operator's pause), within ``max_wait_us``
    (``< 0``: no wait); raise :class:`resilience.RateLimited` when the hold outlasts it.
    Returns what is left of ``max_wait_us``. Registers ``key`` if new."""
    while (left := note_limiter(policy, key)) > 0:
        if max_wait_us < 0 or left * 1e6 > max_wait_us:
            raise RateLimited(policy.name, left)
        step = min(left, _HOLD_POLL)
        await asyncio.sleep(step)
        max_wait_us = max(max_wait_us - int(step * 1e6), 0)
    return max_wait_us


def note_breaker(policy: Any, key: str) -> None:
    """A breaker used ``key``: register it (and its settings) if new."""
    _track(policy, key)
    b = board(policy.store)
    if b is not None:
        s = policy.spec
        settings = {
            "failure_threshold": s.failure_threshold,
            "window_us": s.window_us,
            "break_us": s.break_us,
            "max_break_us": s.max_break_us,
            "half_open_max_calls": s.half_open_max_calls,
            "success_threshold": s.success_threshold,
            "probe_lease_us": s.probe_lease_us,
        }
        b.note("breaker", s.name, settings, key)


def note_concurrency(policy: Any, key: str) -> None:
    """A concurrency limit used ``key``: register it (and its settings) if new."""
    _track(policy, key)
    b = board(policy.store)
    if b is not None:
        s = policy._spec
        settings = {"max_in_flight": s.max_in_flight, "lease_us": s.lease_us}
        b.note("concurrency", s.name, settings, key)


def note_budget(policy: Any, window_s: int) -> None:
    """A retry budget's first store call in this process: register it."""
    policy._registered = True
    b = board(policy.store)
    if b is not None:
        settings = {
            "ratio_ppm": policy._ratio_ppm,
            "reserve": policy._reserve,
            "window_s": window_s,
        }
        b.note("budget", policy.name, settings, None)
