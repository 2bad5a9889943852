"""The store protocol: the seam between policies and the state they share.

A policy never talks to Redis (or to a dict) itself: it asks its store for one atomic decision.
:class:`resilience.MemoryStore` decides in-process; :class:`resilience.RedisStore` decides in
one Lua script on Redis's own clock, so every process sharing the Redis sees one state. This
module is the whole contract a store implements (``docs/stores.md``, "Writing a store", shows
one); the names are re-exported by :mod:`resilience.stores`.

This module is longer than 400 lines on purpose: it is the one place where the contract is
written, nearly all of it docstrings, and a store's author reads it as one document.

**Units and identities.** Times cross this seam as integer **microseconds** (durations only: a
store keeps its own clock, and callers never send timestamps). Logical identities cross it as
``(name, key)`` pairs of *text* (a ``str`` that encodes as UTF-8; policies check it with
:func:`resilience.stores.check_text` before any store sees it); how a store turns them into
storage keys is its own business.

**Errors.** Every operation either answers or raises one of two exceptions, never anything
else (no client library's exception type reaches a policy):

- :class:`resilience.StoreUnavailable`: the store cannot decide right now: a timeout, a
  refused or reset connection, a protocol error, a server that is loading, read-only or
  failing over. Every policy has a ``fallback`` for exactly this (see
  :class:`resilience.FallbackStore`). A store bounds each call in time (``RedisStore``: its
  ``timeout``), so an unreachable backend costs a caller that bound, never a hang.
- :class:`resilience.StoreError`: the store answered with an error that is not about
  availability: a key of another type (``WRONGTYPE``), a missing permission (``NOPERM``), a
  script error. No fallback hides it: it is a misconfiguration or a bug to fix.

``asyncio.CancelledError`` passes through unchanged, and a cancelled operation leaves either
its whole effect or none (a caller that was cancelled after the store decided gets
``CancelledError``, and cleans up what the decision granted).

**Tokens.** An admission (:meth:`WindowOps.window_acquire`) and a probe permit
(:meth:`BreakerOps.breaker_acquire`) carry a token the caller hands back (to release it, to
record the probe's outcome). A token is a non-empty string of ASCII lower-case letters and
digits (``[0-9a-z]``), at most :data:`MAX_TOKEN_LENGTH` characters, unique among the live
entries of its log or breaker. Upper-case letters are reserved for stores that wrap another
(:class:`resilience.FallbackStore` marks its own decisions ``L...`` and ``A``), so a wrapper
always tells its tokens from its inner store's. **A rejection returns no token** (``""``) and
writes nothing: a refused request never occupies a slot.

**Capabilities.** Besides its operations a store says what kind of store it is, so that no
policy needs to know its class: :attr:`Store.decides_locally`, :meth:`BreakerOps.breaker_tag`
and :attr:`Store.observers` (where it reports degraded mode and fallback decisions).

The protocol is split by feature (window limiter, circuit breaker, retry budget, presence,
concurrency limit); a store implements all of them. The conformance suite
:mod:`resilience.testing.conformance` checks a store against this contract; the library runs
it over every store it ships.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from resilience.stores._events import StoreObservers

__all__ = [
    "MAX_AUDIT_ENTRIES",
    "MAX_REGISTRY_KEYS",
    "MAX_TOKEN_LENGTH",
    "MAX_WEIGHT",
    "MERGE_ABOVE",
    "MERGE_FROM",
    "MERGE_GRACE_US",
    "MERGE_SLOTS",
    "BreakerAction",
    "BreakerEventCallback",
    "BreakerOps",
    "BreakerOutcomeName",
    "BreakerReply",
    "BreakerSpec",
    "BreakerStateName",
    "BudgetOps",
    "BudgetResult",
    "ConcurrencyEventCallback",
    "ConcurrencyOps",
    "ConcurrencyReply",
    "ConcurrencySpec",
    "Presence",
    "PresenceOps",
    "RegistryEntry",
    "RegistryEventCallback",
    "RegistryKind",
    "RegistryOps",
    "Store",
    "WindowLimit",
    "WindowOps",
    "WindowResult",
    "merge_slot_us",
    "takes_merge",
]


#: The longest token a store may return (see "Tokens" in the module docs).
MAX_TOKEN_LENGTH = 64

#: The most one limiter log may weigh, admitted plus reserved entries (2**52): counts stay
#: below 2**53, exact in a Lua double as in a Python int (see :meth:`WindowOps.window_acquire`).
MAX_WEIGHT = 2**52

#: Limits above this many units per window may merge admissions (see :func:`merge_slot_us`);
#: at or below it every admission keeps its own entry, so a log holds at most this many.
MERGE_ABOVE = 10_000

#: A merging limit's window is cut into this many slots (see :func:`merge_slot_us`).
MERGE_SLOTS = 5_000

#: A log merges admissions only once it holds this many live entries (see
#: :func:`merge_slot_us`): a smaller log keeps an entry per admission.
MERGE_FROM = 5_000

#: A merging caller's reservation keeps an entry of its own (its waiter may still release it,
#: or move it up) until this long after it fell due; then it joins its slot's entry.
MERGE_GRACE_US = 500_000


def merge_slot_us(limit: int, window_us: int) -> int:
    """The slot width (microseconds) in which admissions of a limit may share one entry, or
    ``0`` when they may not (``limit <= MERGE_ABOVE``: one entry per admission, exact to the
    microsecond).

    Above :data:`MERGE_ABOVE`, once a key's log holds :data:`MERGE_FROM` live entries, the
    admissions of a merging caller (``window_acquire(..., merge=True)``: one that never
    settles them) share one entry per slot, which sits at the slot's *last* microsecond: an
    admission for now joins its slot's entry at once; a reservation keeps its own entry until
    :data:`MERGE_GRACE_US` after it fell due (its waiter may release it or move it up until
    then), then joins the entry of its slot. An
    admission is so counted from up to one slot after it happened, never from before: the
    window never admits more than ``limit``, and a unit frees at most one slot late. A log
    then holds at most :data:`MERGE_FROM` entries of its own plus :data:`MERGE_SLOTS` merged
    ones, the reservations of the last :data:`MERGE_GRACE_US` and those ahead, whatever the
    limit. The slot is ``window_us //
    MERGE_SLOTS`` (a minute's window: 12 ms), but at least 1 ms or 1 % of the window,
    whichever is less (a second's window: 1 ms, so at most 1 000 entries): a slot's entry is
    opened and closed once per slot, and finer slots would cost a busy key's script that
    work every few decisions for a resolution nobody needs.
    """
    if limit <= MERGE_ABOVE:
        return 0
    return max(window_us // MERGE_SLOTS, min(1_000, window_us // 100), 1)


def takes_merge(store: object) -> bool:
    """Whether ``store.window_acquire`` names the ``merge`` keyword (a store written before
    it may not: a caller then never passes it, and every admission keeps its own entry). A
    ``**kwargs`` is not enough: a wrapper that forwards them to a store without ``merge``
    would fail on every merging call."""
    fn = getattr(store, "window_acquire", None)
    if fn is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return False
    return "merge" in params


# --------------------------------------------------------------------------------------------
# Sliding-window rate limiter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """One "at most ``limit`` units per rolling ``window_us``" quota, identified by ``name``.

    ``window_us`` already includes the limiter's latency guard: an admission keeps its slot for
    that long (at least 1). ``limit`` is at most 2**40 (the limiter's ``MAX_LIMIT``), and
    ``name`` is text (a ``str`` that encodes as UTF-8): the policy checks both.
    """

    name: str
    limit: int
    window_us: int


class WindowResult(NamedTuple):
    """The store's answer to :meth:`WindowOps.window_acquire`.

    Attributes:
        allowed: the request was admitted (possibly for a reserved slot ``wait_us`` from now).
        remaining: units still free in the tightest quota after this decision.
        wait_us: when allowed, how long to wait before using the (reserved) slot, 0 for now;
            when rejected, how long until the request could be admitted.
        token: identifies the admitted entry (to release a reservation): ``[0-9a-z]``, at
            most :data:`MAX_TOKEN_LENGTH` characters (see "Tokens" in the module docs);
            always ``""`` when rejected.
    """

    allowed: bool
    remaining: int
    wait_us: int
    token: str


@runtime_checkable
class WindowOps(Protocol):
    """Atomic decisions of an exact sliding log with reservations (one entry per admission)."""

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
    ) -> WindowResult:
        """Admit ``costs[i]`` units under ``limits[i]`` for ``key``, for every ``i``, or none.

        Semantics, for each limit: the log holds entries ``(at, weight)``; an entry counts while
        ``now - window_us < at`` (entries may lie in the future: reservations). The new entry is
        placed at the earliest ``at >= now`` such that no half-open interval of length
        ``window_us`` containing it holds more than ``limit`` units, and not before the key's
        penalty ends. With ``max_wait_us < 0`` only ``at == now`` is accepted (try-acquire);
        otherwise any ``at <= now + max_wait_us`` is reserved. A rejection writes nothing and
        returns the token ``""``. A cost is one entry carrying its weight, ``1 <= cost <=
        limit``; ``key`` is text, as ``name``.

        Exactness: a log never weighs more than :data:`MAX_WEIGHT` = 2**52 units (its live
        and reserved entries):
        a request that would take it beyond is refused as if its slot lay beyond
        ``max_wait_us``. With limits of at most 2**40, every count a store keeps stays below
        2**53, exact in a Lua double (Redis scripts) as in a Python int, so every store
        decides the same.

        Merging (bounded memory), an optional keyword: a store may also take ``merge: bool
        = False`` (keyword-only; the shipped stores do, see :func:`takes_merge`). With
        ``merge=True`` the caller promises never to release, settle or advance this
        admission once it is used: it may release a reservation it no longer wants (a
        cancelled waiter), before :data:`MERGE_GRACE_US` after the slot fell due. Then,
        under each limit whose :func:`merge_slot_us` is positive and whose log holds
        :data:`MERGE_FROM` live entries or more, a request admitted *now*
        adds its weight to the log's entry of the current slot (created at the slot's last
        microsecond if there is none) instead of an entry of its own, and its token names
        no entry (releasing it changes nothing); a reservation keeps its own entry, and
        joins its slot's entry once due for :data:`MERGE_GRACE_US`. A caller passes
        ``merge`` only to a store that takes it; a store without it keeps an entry per
        admission, as before.
        """
        ...

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """Remove the entries of request ``token`` (admitted with ``costs``), e.g. a reservation
        whose caller was cancelled. Idempotent. A release that never arrives (the store was
        unreachable) only wastes capacity: the entry leaves the log with its window."""
        ...

    async def window_settle(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        token: str,
        costs: Sequence[int],
        actual: Sequence[int],
    ) -> bool:
        """Re-weigh the entry of request ``token`` from ``costs[i]`` to ``actual[i]`` units
        under ``limits[i]``, atomically (reserve, then settle to the actual cost).

        ``costs`` are the entry's current weights (as admitted, or as last settled): in a log
        where the entry of ``token`` with that weight is found and still counts (``now -
        window_us < at``), its weight becomes ``actual[i]`` and it keeps its slot time ``at``
        (so the window stays exact); ``actual[i] == 0`` removes it (a refund). Anywhere else
        (the entry left the window, was released, or has another weight: a concurrent settle
        won) nothing changes: a settle never creates an entry, so two settles of one entry at
        once never drift. A settle is never refused: ``actual[i]`` may take the log past its
        limit (the units were spent), and later admissions wait for them to leave the window.
        ``0 <= actual[i] <= 2**40`` (the limiter's ``MAX_LIMIT``). Returns whether any log
        re-weighed the entry.
        """
        ...

    async def window_advance(
        self, limits: Sequence[WindowLimit], key: str, token: str, costs: Sequence[int]
    ) -> int:
        """Move the reserved entry of request ``token`` (weights ``costs``) to an earlier slot
        if it now fits there, atomically; return its wait from now in microseconds.

        The slot is the one :meth:`window_acquire` would give the request now with the entry
        itself left out of the logs (and not before the key's penalty); the entry moves only
        if that slot is earlier than its own. A waiter calls it after a settle or a refund
        freed units (quota freed by a settle is free at once, also for those already
        queued). Returns ``0`` when the slot is due, ``-1`` when a log holds no such entry
        (nothing changes then).
        """
        ...

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """Admit nothing for ``key`` under these limits for ``duration_us`` from now.

        A longer existing penalty is kept (penalties only extend).
        """
        ...

    async def window_learn(
        self, limits: Sequence[WindowLimit], key: str, limit: int, duration_us: int
    ) -> None:
        """Cap each of these limits at ``limit`` for ``key``, for ``duration_us`` from now, for
        every process deciding through this store (the upstream reported a lower quota).

        While the cap is in force, :meth:`window_acquire` decides with ``min(limit_i, cap)``,
        but never below the request's own cost (a cap below a cost makes that request wait a
        whole window instead of forever). A later call replaces the cap (a higher one lifts
        it; ``duration_us=0`` clears it). Entries already admitted stay; the cap only makes
        later admissions wait for the log to drain below it. ``1 <= limit <= 2**40``.
        """
        ...

    async def window_paused(self, limits: Sequence[WindowLimit], key: str) -> int:
        """Microseconds left of the longest penalty on ``key`` under these limits, ``0`` when
        none is in force. A read: it writes nothing.

        The limiter asks it when a caller wakes up for a slot it reserved earlier: a penalty
        that landed meanwhile (another process drew a 429 with a wait hint) covers the slot,
        and the caller must not fire into it.
        """
        ...


@runtime_checkable
class WindowEvents(Protocol):
    """Optional: announcements of freed units, so that waiters of *other* processes move their
    reservations up (:meth:`WindowOps.window_advance`) when a settle frees units. A store
    without them (a process-local store) leaves waiters to the wake-ups of their own process
    and to their reserved slots."""

    def window_tag(self, name: str, key: str) -> str:
        """The message naming limit ``name`` for ``key`` in :meth:`window_subscribe`. Pure."""
        ...

    def window_subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback`` (on the running loop) with a limit's :meth:`window_tag` each time
        a settle lowered the weight of one of its entries (``""``: messages may have been lost,
        every waiter should ask); return a function that unsubscribes it. Best effort."""
        ...


# --------------------------------------------------------------------------------------------
# Circuit breaker  (section owned by the breaker; see resilience/policies/breaker)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerSpec:
    """A circuit breaker's configuration, as the store needs it (durations in microseconds).

    Attributes:
        name: identifies the breaker in the store (with the per-call key).
        failure_threshold: failures within ``window_us`` that open a closed breaker.
        window_us: the rolling window over which failures are counted.
        break_us: how long the breaker stays open after its first trip.
        max_break_us: cap of the break when it grows on consecutive trips (each reopening
            from half-open doubles it); equal to ``break_us`` means no growth.
        half_open_max_calls: probe permits held at once, fleet-wide, while half-open.
        success_threshold: successful probes that close a half-open breaker.
        probe_lease_us: a probe permit expires this long after it was granted (so a crashed
            prober cannot wedge the breaker); its late outcome is then stale.
    """

    name: str
    failure_threshold: int
    window_us: int
    break_us: int
    max_break_us: int
    half_open_max_calls: int
    success_threshold: int
    probe_lease_us: int


#: The three states of a breaker, as they cross the store seam.
BreakerStateName = Literal["closed", "open", "half_open"]
#: What a breaker records about one call (``ignore``: neither, e.g. a cancelled probe), or
#: ``restore``: not a call's outcome, the re-seeding of an open state the store has lost.
BreakerOutcomeName = Literal["ok", "fail", "ignore", "restore"]
#: Operator actions of :meth:`BreakerOps.breaker_admin` (``state`` only reads).
BreakerAction = Literal["state", "open", "close", "reset"]
#: Receives each transition message of :meth:`BreakerOps.breaker_subscribe`.
BreakerEventCallback = Callable[[str], None]


class BreakerReply(NamedTuple):
    """The store's answer to every breaker operation.

    Attributes:
        state: the breaker's state after the operation. ``breaker_admin("state")`` reports an
            open breaker whose break has ended as ``"half_open"`` (the next call would probe).
        gen: the generation after the operation; every transition increments it. ``0``
            means the store holds no state for the key: never written, or lost (a Redis
            restarted without persistence). Every write of the state sets a generation
            ``>= 1``, so a lost open state is never mistaken for a written close.
        wait_us: when ``state`` is ``"open"``, the time left until the break ends (0 if it has
            ended); for a refused acquire in half-open, the time until the earliest probe lease
            expires; otherwise 0.
        permit: ``breaker_acquire`` only: ``"allow"`` (closed), ``"deny"`` or ``"probe"``;
            ``""`` for the other operations.
        token: the probe permit's token when ``permit == "probe"``, else ``""``.
        old: the state before the transition this operation performed, or ``""`` when it
            performed none. At most one transition per operation; the process that receives
            a non-empty ``old`` is the only one that ever hears of that transition.
        stale: ``breaker_record`` only: the outcome was ignored (another generation, an
            expired or unknown probe token, or the breaker was open).
        failures: failures currently in the window (``breaker_record`` and
            ``breaker_admin``; 0 when not closed).
    """

    state: BreakerStateName
    gen: int
    wait_us: int
    permit: str
    token: str
    old: str
    stale: bool
    failures: int


@runtime_checkable
class BreakerOps(Protocol):
    """Atomic decisions of a circuit breaker counting failures in a rolling window.

    State per ``(spec.name, key)``: ``state``, ``open_until``, ``gen``, ``trips`` (consecutive
    trips since the last close), ``probe_ok``, a log of failure times and a set of probe
    leases. Every transition happens inside one operation, so it happens exactly once however
    many processes race, and increments ``gen``.

    A state value that no operation writes (e.g. ``state=bogus`` written into Redis by hand)
    is read as ``closed`` (with the stored generation) and logged as a warning once per key
    and store. The failure log holds no entry older than the window for long: Redis expires
    it ``window_us`` + 1 s after its last failure, the memory store drops it when its newest
    entry leaves the window (a timer on the event loop, nothing on the success path).
    """

    async def breaker_acquire(self, spec: BreakerSpec, key: str) -> BreakerReply:
        """Decide whether a call may run.

        - closed: ``allow``.
        - open, break not ended: ``deny`` with ``wait_us = open_until - now``.
        - open, break ended: move to half-open (``gen + 1``, leases cleared, ``probe_ok = 0``,
          ``old = "open"``) and continue as half-open.
        - half-open: drop expired leases; if fewer than ``half_open_max_calls`` remain, grant
          a ``probe`` whose lease expires ``probe_lease_us`` from now; otherwise ``deny``
          with ``wait_us`` until the earliest lease expires.
        """
        ...

    async def breaker_record(
        self,
        spec: BreakerSpec,
        key: str,
        outcome: BreakerOutcomeName,
        gen: int,
        token: str,
        hint_us: int,
    ) -> BreakerReply:
        """Record the outcome of a call admitted in generation ``gen`` (with probe ``token``,
        or ``""``). ``hint_us`` > 0 is an upstream ``Retry-After`` carried by a failure.

        - ``restore`` (any state; not a call's outcome): a process re-seeds an open state
          it learned (generation ``gen``, ``hint_us`` left) that the store has lost. Applied
          only if the stored generation is lower than ``gen`` and the stored state is not a
          written close (generation 0, no state, always qualifies): the state becomes open
          until ``now + hint_us`` (or the stored open deadline if later), generation
          ``gen``, ``trips`` at least 1, failures and leases cleared, published as
          ``open``; ``old`` stays ``""`` (not a transition). Otherwise nothing changes and
          the reply (the current state) is ``stale``.
        - half-open: the token must still hold a lease (it is removed), else ``stale``.
          ``fail`` reopens (``trips + 1``; break ``min(break_us * 2**(trips-1), max_break_us)``,
          at least ``hint_us``); ``ok`` increments ``probe_ok`` and closes at
          ``success_threshold`` (``trips = 0``, failures cleared); ``ignore`` only frees the
          permit.
        - closed: an outcome of another generation is ``stale``. ``fail`` adds a unique entry
          at ``now``, forgets entries at or before ``now - window_us`` and, when the count
          reaches ``failure_threshold``, opens (``trips + 1``, break as above, at least
          ``hint_us``; failures cleared). One upstream event counts once: a ``fail`` with
          ``hint_us > 0`` that arrives before ``quiet_until`` is ``stale`` (not counted);
          one that counts sets ``quiet_until = now + hint_us`` (kept across transitions).
        - open: ``stale``; a ``fail`` with ``hint_us`` extends ``open_until`` to at least
          ``now + hint_us``.
        """
        ...

    async def breaker_admin(
        self, spec: BreakerSpec, key: str, action: BreakerAction, duration_us: int
    ) -> BreakerReply:
        """Operator actions.

        - ``state``: read only.
        - ``open``: open now for ``duration_us`` (an open breaker gets the new deadline).
        - ``close``: close; failures and leases cleared, ``trips`` kept.
        - ``reset``: close and forget everything (failures, leases, ``trips``).

        ``open`` from another state, ``close`` and ``reset`` (always, even when already
        closed) increment ``gen``, so in-flight outcomes become stale.
        """
        ...

    def breaker_subscribe(self, callback: BreakerEventCallback) -> Callable[[], None]:
        """Call ``callback`` (on the running event loop) with every transition made by any
        process sharing this store; return a function that unsubscribes it.

        Messages are ``"<tag> <gen> <state>"``: ``tag`` is :meth:`breaker_tag` of the
        breaker's name and key, ``gen`` its generation after the transition, ``state`` the
        new state or ``*`` for an operator action (re-read it). ``""`` means "messages may
        have been lost" (the subscription was just established or re-established): forget
        whatever was learned before. Delivery is best effort: while the subscription is down
        nothing arrives, and a store whose decisions are local (:attr:`Store.decides_locally`)
        never calls ``callback``. Never raises once subscribed; must be called with an event
        loop running.
        """
        ...

    def breaker_tag(self, name: str, key: str) -> str:
        """The ``tag`` naming breaker ``name`` for ``key`` in :meth:`breaker_subscribe`
        messages: distinct for distinct ``(name, key)`` pairs, without spaces. A breaker maps
        the tags of the keys it caches back to those keys, so it never needs to know how a
        store forms them. Pure (no I/O); a store that pushes nothing may return any such
        string."""
        ...


# --------------------------------------------------------------------------------------------
# Retry budget  (section owned by the retry budget; see resilience/policies/retry)
# --------------------------------------------------------------------------------------------


class BudgetResult(NamedTuple):
    """The store's answer to :meth:`BudgetOps.budget_withdraw` (counts after the decision).

    Attributes:
        allowed: one retry was granted (and counted).
        requests: requests (deposits) counted in the window.
        retries: retries (granted withdrawals) counted in the window.
    """

    allowed: bool
    requests: int
    retries: int


@runtime_checkable
class BudgetOps(Protocol):
    """Atomic decisions of a Finagle-style retry budget.

    State per ``name``: request and retry counts in 1-second buckets of the store's clock
    (``window_s + 1`` buckets, O(1) memory per budget). A bucket counts while its second ``s``
    satisfies ``now_s - window_s <= s <= now_s``, so an event counts for between ``window_s``
    and ``window_s + 1`` seconds: a burst that spans at most ``window_s`` seconds is always
    seen whole.
    """

    async def budget_deposit(self, name: str, count: int, window_s: int) -> None:
        """Count ``count`` requests (first attempts) now."""
        ...

    async def budget_withdraw(
        self, name: str, deposits: int, ratio_ppm: int, reserve: int, window_s: int
    ) -> BudgetResult:
        """Count ``deposits`` requests, then grant one retry if, counting it,
        ``retries * 1_000_000 <= ratio_ppm * requests + reserve * 1_000_000`` over the window.

        ``ratio_ppm`` is the budget's ratio in millionths (20 % is ``200_000``); ``reserve``
        is the floor of retries per window (``min_per_second * window_s``). A refusal counts
        the deposits but no retry.
        """
        ...


# --------------------------------------------------------------------------------------------
# Presence  (section owned by the fallback; see resilience/stores/_fallback.py)
# --------------------------------------------------------------------------------------------


class Presence(NamedTuple):
    """One quota's deciders, as :meth:`PresenceOps.presence_announce` saw them.

    Attributes:
        members: live deciders sharing the quota (the announcer included, so at least 1).
        rank: the announcer's position among them, from 0, in the order of their ids (the
            same order for every member), so ``0 <= rank < members``.
    """

    members: int
    rank: int


@runtime_checkable
class PresenceOps(Protocol):
    """Which deciders share a quota, so that each can take a fair share when the store fails."""

    async def presence_announce(
        self, names: Sequence[str], key: str, member: str, ttl_us: int
    ) -> tuple[Presence, ...]:
        """Record that decider ``member`` uses limiters ``names`` for ``key`` now, and return,
        per name, the live members (those that announced it within the last ``ttl_us``, this
        one included) as a count and this member's rank among them sorted by id: enough for
        every member that saw the same set to compute shares that add up to the quota. One
        round trip. A store private to one process always answers ``Presence(1, 0)``.

        Ids are compared as strings by the store (Lua's string order on Redis); use ids of
        one fixed length over ``[0-9a-f]``, whose order is the same in every locale.
        """
        ...


# --------------------------------------------------------------------------------------------
# Concurrency limit  (section owned by the concurrency limit; see resilience/policies/concurrency)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConcurrencySpec:
    """A concurrency limit, as the store needs it.

    Attributes:
        name: identifies the limit in the store (with the per-call key).
        max_in_flight: permits held at once, fleet-wide, per key (at least 1).
        lease_us: a permit, and a waiter's place in the queue, expires this long after it was
            granted or last renewed (so a crashed holder or waiter frees it).
    """

    name: str
    max_in_flight: int
    lease_us: int


class ConcurrencyReply(NamedTuple):
    """The store's answer to :meth:`ConcurrencyOps.concurrency_acquire`.

    Attributes:
        granted: a permit is held, under ``token``.
        token: the permit when granted; the waiter's ticket when queued; ``""`` when refused
            (nothing written). ``[0-9a-z]``, as every token (upper-case marks are a wrapper's).
        in_flight: permits held after the decision (every process's).
        waiting: waiters queued after the decision (every process's).
        wait_us: queued or refused: ask again no later than this (the earliest lease in the
            store that could free a slot expires then, at most ``lease_us // 3`` from now,
            which also renews a waiter's place); 0 when granted.
    """

    granted: bool
    token: str
    in_flight: int
    waiting: int
    wait_us: int


#: Receives each message of :meth:`ConcurrencyOps.concurrency_subscribe`.
ConcurrencyEventCallback = Callable[[str], None]


@runtime_checkable
class ConcurrencyOps(Protocol):
    """Atomic decisions of a fleet-wide concurrency limit with a FIFO queue of waiters.

    State per ``(spec.name, key)``: *holders* (token -> lease expiry) and a *queue* of waiters
    (ticket -> arrival order, lease expiry). Every operation first forgets the holders and
    waiters whose lease has expired (a crashed process's permits come back within one lease).
    Waiters are served in arrival order: with ``free = max_in_flight - holders``, the waiters
    at positions ``0 .. free-1`` of the queue may take a permit, others wait, so a newcomer
    never overtakes a waiter. Nobody blocks in the store: a waiter asks again when it is
    told (:meth:`concurrency_subscribe`) or when its reply's ``wait_us`` has passed.
    """

    async def concurrency_acquire(
        self, spec: ConcurrencySpec, key: str, ticket: str, queue: bool
    ) -> ConcurrencyReply:
        """Take a permit for ``key`` if it is this caller's turn, else queue (or refuse).

        ``ticket`` is ``""`` for a new caller, else the ticket of an earlier reply. A ticket
        already holding a permit (a repeated call) is granted again (lease renewed). A ticket
        in the queue is at its position; a new caller, or a ticket the store has forgotten
        (its lease expired, the store lost its state), is placed at the tail. If the position
        is below ``free``, the caller leaves the queue and holds a permit under its ticket
        (a new one gets a fresh token), lease ``now + lease_us``. Otherwise, with ``queue``,
        it stays queued (lease renewed to ``now + lease_us``) and the reply carries its
        ticket; without ``queue`` it is refused: token ``""``, and a ticket it held leaves
        the queue. A store that frees permits of expired leases here tells the waiters that
        may now take them (as :meth:`concurrency_release`).
        """
        ...

    async def concurrency_renew(self, spec: ConcurrencySpec, key: str, token: str) -> bool:
        """Extend the lease of permit ``token`` to ``now + lease_us``. ``False`` if the store
        did not hold it (its lease lapsed, or the store lost its state): it is then held
        again, even above ``max_in_flight``, because the call it stands for is running."""
        ...

    async def concurrency_release(self, spec: ConcurrencySpec, key: str, token: str) -> None:
        """Return permit ``token``, or take waiter ``token`` out of the queue. Idempotent.
        When this frees a place, tell the waiters that may now take a permit
        (:meth:`concurrency_subscribe`)."""
        ...

    def concurrency_subscribe(self, callback: ConcurrencyEventCallback) -> Callable[[], None]:
        """Call ``callback`` (on the running loop) when waiters may take a permit; return a
        function that unsubscribes it.

        Messages are ``"<tag> <ticket> [<ticket> ...]"`` (these waiters of the limit named by
        :meth:`concurrency_tag` may take a permit now) or ``"<tag> *"`` (any of its waiters
        may). ``""`` means "messages may have been lost": every waiter should ask again.
        Best effort: a waiter also asks again after its reply's ``wait_us``.
        """
        ...

    def concurrency_tag(self, name: str, key: str) -> str:
        """The ``tag`` naming limit ``name`` for ``key`` in :meth:`concurrency_subscribe`
        messages: distinct for distinct pairs, without spaces. Pure (no I/O)."""
        ...


# --------------------------------------------------------------------------------------------
# Registry and operator reads  (section owned by the operator tools; see resilience/admin)
# --------------------------------------------------------------------------------------------

#: What a registry entry describes: a policy kind.
RegistryKind = Literal["limiter", "breaker", "budget", "concurrency"]
#: Receives each registry message of :meth:`RegistryOps.registry_subscribe`.
RegistryEventCallback = Callable[[str], None]
#: The most keys a registry entry keeps (the most recently seen).
MAX_REGISTRY_KEYS = 1000
#: The most audit entries a store keeps (the newest).
MAX_AUDIT_ENTRIES = 1000


class RegistryEntry(NamedTuple):
    """One policy a store has seen, as :meth:`RegistryOps.registry_list` returns it.

    Attributes:
        kind: ``"limiter"``, ``"breaker"``, ``"budget"`` or ``"concurrency"``.
        name: the policy's name in the store.
        settings: integers the operator tools need (durations in microseconds), as the
            policy last registered them: a limiter's ``limit`` and ``window_us``, a
            breaker's :class:`BreakerSpec` fields, a budget's ``ratio_ppm``, ``reserve`` and
            ``window_s``.
        keys: the keys the policy used, most recently seen first, at most
            :data:`MAX_REGISTRY_KEYS`; kept after their state keys expired (an idle limiter is
            still listed).
        age_us: microseconds since the entry was last registered (store clock).
    """

    kind: RegistryKind
    name: str
    settings: Mapping[str, int]
    keys: tuple[str, ...]
    age_us: int


@runtime_checkable
class RegistryOps(Protocol):
    """What exists in a store, and the reads and writes of the operator tools.

    Optional: every policy works with a store that lacks this section (they register through
    it only when the store has :meth:`registry_put`); :mod:`resilience.admin` and the
    ``resilience`` command need it. Policies write the registry cheaply: once per process
    per ``(kind, name)``, and the keys they see in batches, in the background, never on a
    call's path, so a registry write never fails or delays a call.
    """

    async def registry_put(
        self, kind: RegistryKind, name: str, settings: Mapping[str, int], keys: Sequence[str]
    ) -> None:
        """Record (or refresh) policy ``name`` of ``kind`` with ``settings`` (replacing the
        previous ones), and mark ``keys`` as seen now (each entry keeps the
        :data:`MAX_REGISTRY_KEYS` most recently seen)."""
        ...

    async def registry_list(self) -> tuple[RegistryEntry, ...]:
        """Every entry, sorted by ``(kind, name)``."""
        ...

    async def registry_hold(self, name: str, duration_us: int) -> int:
        """Pause every key of limiter ``name`` (keys first used later included) for
        ``duration_us`` from now; ``0`` lifts the pause. Unlike a key's penalty a hold is
        replaced, not extended. Tells every subscriber (:meth:`registry_subscribe`). Returns
        the time left of the hold in force (0: none)."""
        ...

    async def registry_holds(self) -> Mapping[str, int]:
        """The holds in force: limiter name -> microseconds left (a read)."""
        ...

    def registry_subscribe(self, callback: RegistryEventCallback) -> Callable[[], None]:
        """Call ``callback`` (on the running loop) with ``"hold"`` whenever a hold changes in
        any process sharing this store, and with ``""`` when the subscription is (re)
        established (messages may have been lost: re-read :meth:`registry_holds`). Best
        effort, like :meth:`BreakerOps.breaker_subscribe`; a memory store calls it in-process.
        Returns a function that unsubscribes."""
        ...

    async def registry_audit(self, entry: str) -> None:
        """Append ``entry`` (text, e.g. JSON) to the audit log, keeping the newest
        :data:`MAX_AUDIT_ENTRIES`."""
        ...

    async def registry_audit_read(self, count: int) -> tuple[str, ...]:
        """The newest ``count`` audit entries, newest first."""
        ...

    async def registry_members(
        self, names: Sequence[str], key: str, ttl_us: int
    ) -> tuple[tuple[str, ...], ...]:
        """Per limiter name, the deciders that announced it for ``key`` within the last
        ``ttl_us`` (:meth:`PresenceOps.presence_announce`), sorted; a read that announces no
        one. A store private to one process answers no one (``()`` per name)."""
        ...

    async def registry_probes(self, spec: BreakerSpec, key: str) -> int:
        """Probe permits of breaker ``spec.name`` for ``key`` whose lease has not expired (a
        read: ``probes out`` of a half-open breaker)."""
        ...

    async def registry_usage(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """Per limit, the units of ``key``'s log that count now (admitted within the window,
        and reserved slots ahead). A read."""
        ...

    async def registry_learned(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """Per limit, the limit learned from the upstream in force for ``key``
        (:meth:`WindowOps.window_learn`), ``0`` where none is. A read."""
        ...

    async def registry_concurrency(self, spec: ConcurrencySpec, key: str) -> tuple[int, int]:
        """``(in flight, waiting)`` of concurrency limit ``spec.name`` for ``key``: the permits
        and the queued waiters whose lease has not expired. A read."""
        ...

    async def registry_clear(self, limits: Sequence[WindowLimit], key: str, *, log: bool) -> None:
        """Lift ``key``'s penalty under these limits; with ``log``, also forget its log (a
        reset: the key starts empty)."""
        ...


# --------------------------------------------------------------------------------------------
# The whole protocol
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Store(WindowOps, BreakerOps, BudgetOps, PresenceOps, ConcurrencyOps, Protocol):
    """Everything a store implements: the union of the per-feature protocols above, a label
    and its capabilities (the error contract and the token rule are in the module docs)."""

    #: A short label for logs and telemetry (never contains credentials).
    label: str

    @property
    def decides_locally(self) -> bool:
        """Whether every decision is taken in this process, without I/O.

        ``True`` (:class:`resilience.MemoryStore`): no other process shares the state, so it
        never changes behind this process's back (nothing to cache or re-read), a decision
        cannot be lost to a cancellation (it completes before the caller can be cancelled, or
        does not start), the store is never unavailable and its presence is always
        ``Presence(1, 0)``. ``False`` (:class:`resilience.RedisStore`): decisions are shared
        and remote; policies shield them from cancellation, cache what the store pushes, and
        fall back when it is unavailable. A store that wraps another answers for it, unless the
        wrapper adds awaits of its own inside a decision (then ``False``).
        """
        ...

    @property
    def observers(self) -> StoreObservers:
        """Where the store reports its availability: entering and leaving degraded mode
        (:meth:`resilience.stores.StoreEvents.on_degraded`) and decisions a fallback took in
        its place (:meth:`~resilience.stores.StoreEvents.on_fallback`). Policies register
        their telemetry here; a store that is never unavailable reports nothing. A store that
        wraps another shares the other's."""
        ...
