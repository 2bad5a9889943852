"""The circuit breaker: "``failure_threshold`` failures within ``window`` seconds open it for
``break_duration`` seconds", counted fleet-wide when its store is shared.

Semantics (the same on every store; times on the store's clock, Redis ``TIME`` for
:class:`resilience.RedisStore`):

- **Closed.** Calls run. A failure is logged with its time; when the failures of the last
  ``window`` seconds reach ``failure_threshold``, the breaker opens. Successes are not
  recorded (count mode): they neither reset nor dilute the count.
- **Open.** Calls fail fast with :class:`resilience.CircuitOpen` (``retry_after`` = seconds
  until the break ends) for ``break_duration`` seconds, or longer if the failure that tripped
  it (or one arriving while open) carried an upstream ``retry_after`` hint.
- **Half-open.** After the break, at most ``half_open_max_calls`` probes run at once across
  everything sharing the store; other calls fail fast. A failed probe reopens the breaker;
  ``success_threshold`` successful probes close it. A probe permit expires after
  ``probe_lease`` seconds, so a crashed prober cannot wedge the breaker.
- **Generations.** Every transition starts a new generation; the outcome of a call that
  started in an earlier one is ignored (no double counting across a trip or a re-close).
- **Exactly once.** Each transition is made by one atomic store operation, so it happens
  once fleet-wide; listeners and telemetry fire only in the process that made it.
- **Cancellation** is never a failure and never leaks a probe permit. A caller cancelled at
  any point keeps every promise made for it: a probe cancelled while it runs returns its
  permit at once; a store operation it had started (acquire, the record of an outcome, an
  operator action) is shielded and completes in the background, so a granted probe is
  returned, an outcome is still recorded, and a transition that operation made is still
  reported (listeners, log, telemetry; the span event only if the call's span is still
  open). Listeners of a transition all run even if the caller is cancelled while an
  ``async`` one runs (the rest run in the background).
- **Lost state.** A process that learned an open deadline refuses calls until it, even if
  the store forgets the breaker (a Redis restart without persistence, a flush): a missing
  state reads as generation 0, older than any transition, and is not a close. The process
  then re-seeds the store with the open state it knew (same generation, same deadline), in
  the background, so the rest of the fleet is refused too. A close that is written (a
  successful probe, an operator's ``close`` or ``reset``) is obeyed at once, even one
  written after the loss.
- **Durations** (``window``, ``break_duration``, ``max_break_duration``, ``probe_lease``,
  ``open(duration=...)``) are at least :data:`MIN_DURATION` (1 ms): stores count whole
  microseconds and expire keys in milliseconds, and a duration rounding to 0 would silently
  disable what it bounds (a zero probe lease lets every caller probe).

Round trips to a shared store: while the process believes the breaker closed, calls are
admitted locally and that belief is refreshed at most every ``state_refresh`` seconds (and
after every recorded failure), so successes cost no round trip; a process told "open for
12.3 s more" fails fast locally until then without asking again.

Staleness: a store that pushes transitions (:meth:`resilience.stores.base.BreakerOps.
breaker_subscribe`; :class:`resilience.RedisStore` over pub/sub) lets a breaker with
``state_refresh > 0`` drop what it believes about a key as soon as any process makes a
transition there (a trip, a re-open, a probe phase, a close, an operator action), so its next
call asks the store: a trip elsewhere reaches this process within the pub/sub delivery time
(milliseconds). The breaker subscribes on its first round trip in a running event loop. Until
the subscription is established, while it is down (Redis unreachable: it reconnects in the
background, then forgets every "closed" it learned meanwhile) and on stores that push nothing,
the bound is ``state_refresh``: a process may still admit calls for up to that long after a
trip elsewhere. A known open deadline is kept until it passes (an operator's ``close``
elsewhere is pushed too).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

from resilience import telemetry
from resilience.errors import CircuitOpen, ResilienceError
from resilience.http import classify
from resilience.pipeline import CallContext, KeySpec, PolicyBase, resolve_key
from resilience.policies._hints import requested_wait
from resilience.policies._validate import (
    MAX_SECONDS,
    call_key,
    check_key,
    check_name,
    check_store,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from resilience.stores.base import (
    BreakerAction,
    BreakerOutcomeName,
    BreakerReply,
    BreakerSpec,
    Store,
)
from resilience.stores.fallback import FallbackMode, FallbackStore, with_fallback
from resilience.stores.keys import breaker_tag
from resilience.stores.memory import MemoryStore

__all__ = [
    "DEFAULT_STATE_REFRESH",
    "MIN_DURATION",
    "BreakerState",
    "CircuitBreaker",
    "FailurePredicate",
    "ResultPredicate",
    "StateChange",
    "StateListener",
    "default_failure",
]

T = TypeVar("T")
logger = logging.getLogger("resilience")

#: ``state_refresh`` of a breaker on a shared store when none is given (seconds).
DEFAULT_STATE_REFRESH = 1.0

#: The shortest duration a breaker accepts (seconds): 1 ms. Stores count whole microseconds
#: and Redis expires keys in milliseconds; anything shorter would round towards 0 and
#: disable what it bounds (e.g. a probe lease of 0 lets every caller probe).
MIN_DURATION = 0.001

BreakerState = Literal["closed", "open", "half_open"]
#: A predicate over an exception: ``True`` means the exception counts as a failure.
FailurePredicate = Callable[[BaseException], bool]
#: A predicate over a returned value: ``True`` means the result counts as a failure.
ResultPredicate = Callable[[Any], bool]

_VIEW_MAX = 10_000


class StateChange(NamedTuple):
    """One breaker transition, as listeners receive it.

    Attributes:
        breaker: the breaker's name.
        key: the key whose breaker changed state (``""`` for the default key).
        old: the state before.
        new: the state after.
    """

    breaker: str
    key: str
    old: BreakerState
    new: BreakerState


#: A listener: called with each :class:`StateChange` this process performed. It may be a
#: plain function or an ``async def`` (its coroutine is awaited before the call proceeds).
StateListener = Callable[[StateChange], object]


class _View:
    """What this process believes about one key, to skip store round trips."""

    __slots__ = ("floor", "fresh_until", "gen", "refresh", "state")

    def __init__(self, state: str, gen: int, fresh_until: float) -> None:
        self.state = state
        self.gen = gen
        # A transition to this generation was announced: older replies are not cached.
        self.floor = 0
        # closed: believed until then; open: the break's end (monotonic seconds).
        self.fresh_until = fresh_until
        # While one task re-reads an expired "closed", the others wait for its answer.
        self.refresh: asyncio.Future[None] | None = None


class _Permit(NamedTuple):
    gen: int
    token: str


_LOCAL_PERMITS: dict[int, _Permit] = {}


def _permit(gen: int) -> _Permit:
    p = _LOCAL_PERMITS.get(gen)
    if p is None:
        if len(_LOCAL_PERMITS) > 64:
            _LOCAL_PERMITS.clear()
        p = _LOCAL_PERMITS[gen] = _Permit(gen, "")
    return p


def _check_failure_on(value: object) -> Callable[[BaseException], bool] | None:
    if value is None:
        return None
    if isinstance(value, type):
        if not issubclass(value, BaseException):
            raise TypeError(f"failure_on must be exception types or a predicate, got {value!r}")
        exc_type = value
        return lambda e: isinstance(e, exc_type)
    if isinstance(value, tuple | list | set | frozenset):
        types = tuple(value)
        if not types or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in types
        ):
            raise TypeError(
                "failure_on must be an exception type, a non-empty tuple of exception types "
                "or a predicate over the exception"
            )
        return lambda e: isinstance(e, types)
    if callable(value):
        return value
    raise TypeError(
        "failure_on must be an exception type, a tuple of them, or a predicate over the "
        f"exception, got {type(value).__name__}"
    )


def _duration(name: str, value: object) -> float:
    """A breaker duration: finite, at most ``MAX_SECONDS`` and at least :data:`MIN_DURATION`."""
    v = positive_seconds(name, value)
    if v < MIN_DURATION:
        raise ValueError(
            f"{name} must be at least {MIN_DURATION} seconds (stores count whole microseconds "
            f"and expire keys in milliseconds), got {value}"
        )
    return v


def _open_ctx(ctx: CallContext | None) -> CallContext | None:
    """``ctx`` if its call span is still open (or it has none), else ``None``: a transition
    reported after the caller was cancelled still counts, but cannot annotate an ended span."""
    if ctx is None:
        return None
    span = telemetry.call_span(ctx)
    if span is not None and not span.is_recording():
        return None
    return ctx


def _hint_us(obj: object) -> int:
    """The wait an exception or result asks for (:func:`requested_wait`), in µs (0: none)."""
    hint = requested_wait(obj)
    if hint is None or hint.seconds <= 0:
        return 0
    return math.ceil(min(hint.seconds, MAX_SECONDS) * 1e6)


def default_failure(exc: Exception) -> bool:
    """The default ``failure_on``: whether an exception counts as a failure.

    An exception that carries an HTTP outcome (any client's or AI SDK's status error,
    transport error or error event; see :func:`resilience.http.classify`) counts only when it
    is the upstream's fault: 408, 429, 5xx, 529, transport failures. The caller's faults (400,
    401, 403, 404, 413, 422, a 429 about billing) are not failures: the upstream answered.
    Every other exception counts.
    """
    c = classify(exc)
    return True if c is None else c.fault == "upstream"


class CircuitBreaker(PolicyBase):
    """Open after ``failure_threshold`` failures within ``window`` s, for ``break_duration`` s.

    Usable as a decorator (``@breaker``), as a pipeline policy, and directly
    (``await breaker.call(fn, *args)``). See the module documentation for the exact semantics.

    Args:
        failure_threshold: failures within ``window`` that open the breaker (default 10).
        window: the rolling window, in seconds, over which failures are counted (default 60).
        break_duration: seconds the breaker stays open before it lets probes through
            (default 30). An upstream ``retry_after`` hint on the failure that trips it, or
            on one arriving while it is open, keeps it open at least that long.

            Every duration option (``window``, ``break_duration``, ``max_break_duration``,
            ``probe_lease``) must lie in ``[MIN_DURATION, MAX_SECONDS]``: at least 0.001 s
            (1 ms, the smallest duration that survives the stores' microsecond and
            millisecond units with room to spare), at most about 3 years; otherwise
            ``ValueError`` naming the parameter, the same whatever the store.
        store: where the state lives: :class:`resilience.RedisStore` to share it across
            processes; default, the process-wide :class:`resilience.MemoryStore`. Breakers
            with the same ``name`` in the same store share their state (per key).
        name: identifies the breaker in the store, in :class:`resilience.CircuitOpen` and in
            telemetry.
        half_open_max_calls: probes allowed at once after the break, fleet-wide (default 1).
        success_threshold: successful probes that close the breaker (default 1).
        failure_on: which exceptions count as failures: an exception type, a tuple of them,
            or a predicate over the exception. Default (:func:`default_failure`): every
            :class:`Exception`, except an HTTP error that is the caller's fault (400, 401, 403,
            404, 413, 422, a billing 429, from any HTTP client or AI SDK): the upstream
            answered. A failure that asks for a wait (a 429 with ``Retry-After``) while an
            earlier counted one's wait is still running is not counted again, fleet-wide: the
            burst of requests already in flight when a quota ran out is one event. Never
            counted whatever this says: :class:`asyncio.CancelledError` and other
            ``BaseException`` s that are not ``Exception`` s, and the library's own
            rejections (:class:`resilience.ResilienceError`, e.g. an inner limiter's
            :class:`resilience.RateLimited`); those are neither failures nor successes. An
            exception that does not count is a success (the upstream answered).
        failure_if_result: a predicate over the returned value: ``True`` counts the call as a
            failure although it returned (the value is still returned to the caller), e.g.
            ``failure_if_result=lambda r: getattr(r, "status", None) == 429``.
        key: as a pipeline policy or decorator: the key of each call (a string, or a callable
            over the call's arguments, e.g. per upstream host); each key has its own state.
        max_break_duration: when set, each consecutive trip without a close in between
            doubles the break, up to this many seconds. Default: no growth.
        probe_lease: seconds a probe permit lasts; a prober that has not reported by then is
            presumed dead, its permit is given to the next caller and its late outcome is
            ignored. Default: ``break_duration``.
        state_refresh: seconds a process trusts "closed" without asking the store: the
            staleness bound of a breaker opened by another process (a process also learns the
            state from every failure it records). ``0`` asks the store on every call and never
            skips the store on a cached open deadline (a deadline it learned still holds if
            the store has lost the state). Default: :data:`DEFAULT_STATE_REFRESH` for a
            shared store, ``0`` for a :class:`resilience.MemoryStore` (whose decisions are
            already local). Any finite value in ``[0, MAX_SECONDS]``: it never reaches the
            store, so it has no minimum.
        listeners: callables receiving each :class:`StateChange` made by this process (plain
            functions, or ``async def`` hooks whose coroutines are awaited), in order, once
            per transition. A listener that raises is logged and ignored. If the caller is
            cancelled while an ``async`` listener runs, that listener and the later ones
            complete in the background.
        fallback: what to do when the store is unreachable: ``"local"`` (default: a local
            breaker with the same thresholds decides; a deadline already known stays in
            force), ``"allow"`` (let calls through) or ``"deny"`` (raise
            :class:`resilience.StoreUnavailable`); see :mod:`resilience.stores.fallback`.
    """

    def __init__(
        self,
        failure_threshold: int = 10,
        window: float = 60.0,
        break_duration: float = 30.0,
        *,
        store: Store | None = None,
        name: str = "default",
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        failure_on: type[BaseException]
        | tuple[type[BaseException], ...]
        | FailurePredicate
        | None = None,
        failure_if_result: ResultPredicate | None = None,
        key: KeySpec = None,
        max_break_duration: float | None = None,
        probe_lease: float | None = None,
        state_refresh: float | None = None,
        listeners: Iterable[StateListener] = (),
        fallback: FallbackMode = "local",
    ) -> None:
        self.failure_threshold = positive_int("failure_threshold", failure_threshold)
        self.window = _duration("window", window)
        self.break_duration = _duration("break_duration", break_duration)
        self.name = check_name(name)
        self.half_open_max_calls = positive_int("half_open_max_calls", half_open_max_calls)
        self.success_threshold = positive_int("success_threshold", success_threshold)
        self.store: Store = with_fallback(check_store(store, "breaker_acquire"), fallback)
        self._failure_on = _check_failure_on(failure_on)
        if failure_if_result is not None and not callable(failure_if_result):
            raise TypeError("failure_if_result must be a predicate over the result")
        self._failure_if_result = failure_if_result
        check_key(key)
        self._key = key
        if max_break_duration is None:
            self.max_break_duration = self.break_duration
        else:
            self.max_break_duration = _duration("max_break_duration", max_break_duration)
            if self.max_break_duration < self.break_duration:
                raise ValueError(
                    f"max_break_duration must be >= break_duration ({self.break_duration}), "
                    f"got {max_break_duration}"
                )
        self.probe_lease = (
            self.break_duration if probe_lease is None else _duration("probe_lease", probe_lease)
        )
        local = isinstance(self.store, MemoryStore)
        if state_refresh is None:
            self.state_refresh = 0.0 if local else DEFAULT_STATE_REFRESH
        else:
            self.state_refresh = non_negative_seconds("state_refresh", state_refresh)
        # A MemoryStore decides without suspending, so its replies cannot be lost to a
        # cancellation, and it cannot lose state behind this process's back. A remote store's
        # operations are shielded (a reply is always processed: a granted probe returned, a
        # transition reported), and the open deadlines learned from it are kept.
        self._shield = not local
        if isinstance(listeners, str) or not isinstance(listeners, Iterable):
            raise TypeError("listeners must be an iterable of callables")
        self._listeners: list[StateListener] = []
        for i, fn in enumerate(listeners):
            if not callable(fn):
                raise TypeError(f"listeners[{i}] must be callable, got {type(fn).__name__}")
            self._listeners.append(fn)
        self.spec = BreakerSpec(
            name=self.name,
            failure_threshold=self.failure_threshold,
            window_us=round(self.window * 1e6),
            break_us=round(self.break_duration * 1e6),
            max_break_us=round(self.max_break_duration * 1e6),
            half_open_max_calls=self.half_open_max_calls,
            success_threshold=self.success_threshold,
            probe_lease_us=round(self.probe_lease * 1e6),
        )
        self._views: dict[str, _View] = {}
        self._tags: dict[str, str] = {}  # breaker_tag(name, key) -> key, for pushed events
        self._events_loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        # key -> (generation, monotonic deadline) of an open state learned from the store
        # (remote stores only): kept until the deadline even if the store forgets it.
        self._opens: dict[str, tuple[int, float]] = {}
        self._reseeding: set[str] = set()
        # Decisions the fallback took instead of the shared store (to tell its replies apart).
        self._fallback_stats = self.store.stats if isinstance(self.store, FallbackStore) else None
        # The pushed-events subscription delivered its first "" (later ones: re-established).
        self._events_up = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failure_threshold={self.failure_threshold}, window={self.window}, "
            f"break_duration={self.break_duration}, name={self.name!r}, store={self.store!r})"
        )

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener`` with every :class:`StateChange` this process performs."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener`` (``ValueError`` if it was not added)."""
        self._listeners.remove(listener)

    @property
    def listeners(self) -> Sequence[StateListener]:
        """The registered listeners, in call order."""
        return tuple(self._listeners)

    # ------------------------------------------------------------------ transitions

    async def _transition(self, key: str, reply: BreakerReply, ctx: CallContext | None) -> None:
        """Report the transition ``reply`` made, if any; the listeners run before this returns.

        If the caller is cancelled while an ``async`` listener runs, the cancellation
        propagates at once and the remaining listeners still run, in the background.
        """
        if not reply.old or reply.old == reply.state:
            return
        rest = self._announce(key, reply, ctx)
        if rest is not None:
            await asyncio.shield(rest)

    def _announce(
        self, key: str, reply: BreakerReply, ctx: CallContext | None
    ) -> asyncio.Task[None] | None:
        """Report a transition this process made: telemetry, log, then each listener in order.

        Returns the task running the listeners from the first ``async`` one on (``None`` when
        every listener has run already).
        """
        change = StateChange(self.name, key, reply.old, reply.state)  # type: ignore[arg-type]
        telemetry.breaker_state_change(ctx, breaker=self.name, old=reply.old, new=reply.state)
        logger.info(
            "circuit breaker %r%s: %s -> %s",
            self.name,
            f" [{key}]" if key else "",
            reply.old,
            reply.state,
            extra={"breaker": self.name, "key": key, "old": reply.old, "new": reply.state},
        )
        listeners = tuple(self._listeners)
        for i, fn in enumerate(listeners):
            try:
                r = fn(change)
            except Exception:
                logger.exception("circuit breaker %r: listener %r failed", self.name, fn)
                continue
            if inspect.isawaitable(r):
                task = asyncio.ensure_future(self._notify(change, fn, r, listeners[i + 1 :]))
                self._keep(task)
                return task
        return None

    async def _notify(
        self,
        change: StateChange,
        fn: StateListener,
        pending: Awaitable[object],
        rest: Sequence[StateListener],
    ) -> None:
        try:
            await pending
        except Exception:
            logger.exception("circuit breaker %r: listener %r failed", self.name, fn)
        for fn in rest:
            try:
                r = fn(change)
                if inspect.isawaitable(r):
                    await r
            except Exception:
                logger.exception("circuit breaker %r: listener %r failed", self.name, fn)

    # ------------------------------------------------------------------ local view

    def _learn(self, key: str, reply: BreakerReply, local: bool = False) -> float:
        """Update what this process believes about ``key`` from a store reply (``local``: the
        fallback's, the shared store did not answer).

        Returns the seconds left of an open state this process knows and the store has lost
        or cannot confirm (the call must be refused; the store is being re-seeded), else 0.
        """
        left = 0.0
        known: tuple[int, float] | None = None
        if self._shield and (self._opens or reply.state == "open"):
            known = self._check_open(key, reply, local)
        if self.state_refresh <= 0:
            return known[1] - time.monotonic() if known is not None else left
        if self._events_loop is not asyncio.get_running_loop():
            self._subscribe()
        views = self._views
        v = views.get(key)
        now = time.monotonic()
        state, gen = reply.state, reply.gen
        if known is not None:
            gen, fresh = known
            state = "open"
            left = fresh - now
        elif state == "closed":
            fresh = now + self.state_refresh
        elif state == "open" and reply.wait_us > 0:
            fresh = now + reply.wait_us / 1e6
        else:
            views.pop(key, None)
            return left
        if v is not None and (gen < v.floor or (gen < v.gen and now < v.fresh_until)):
            return left  # an older reply overtaken by a newer one (or by an announced transition)
        if v is None:
            if len(views) >= _VIEW_MAX:
                views.clear()
                self._tags.clear()
            views[key] = _View(state, gen, fresh)
            if len(self._tags) < _VIEW_MAX:
                self._tags[breaker_tag(self.name, key)] = key
        else:
            v.state = state
            v.gen = gen
            v.fresh_until = fresh
        return left

    def _check_open(self, key: str, reply: BreakerReply, local: bool) -> tuple[int, float] | None:
        """Keep the open deadlines learned from the shared store; ``(gen, deadline)`` of the
        one ``reply`` contradicts because the store has lost it (re-seeding it), else ``None``.

        Generations only grow while the store keeps its state, and every write of the state
        sets one (>= 1): a reply older than the known open generation means the state was
        lost, unless it is a written close (obeyed). A newer reply is the truth. A fallback's
        reply (``local``) says nothing about the shared state: the known deadline holds, and
        nothing is learned from it (local decisions are never replayed into the store).
        """
        now = time.monotonic()
        opens = self._opens
        known = opens.get(key)
        if known is not None:
            gen, until = known
            theirs = now + reply.wait_us / 1e6 if reply.state == "open" else 0.0
            if now >= until:
                del opens[key]  # passed
                known = None
            elif local:
                if theirs >= until:
                    return None
                self._reseed(key, gen, until)  # applied once the store answers, if it lost it
                return known
            elif reply.gen > gen or (reply.gen == gen and reply.state != "open"):
                del opens[key]  # a newer transition (a close is obeyed at once)
                known = None
            elif reply.gen < gen:
                if reply.gen > 0 and reply.state == "closed":
                    del opens[key]  # a close written after the loss: obeyed
                    return None
                if theirs < until:
                    self._reseed(key, gen, until)
                    return known
                known = None  # re-opened since, for longer: follow the store
        if local:
            return None
        if reply.state == "open" and reply.wait_us > 0:
            if known is None and len(opens) >= _VIEW_MAX:
                for k in [k for k, (_, u) in opens.items() if u <= now]:
                    del opens[k]
                if len(opens) >= _VIEW_MAX:
                    return None
            opens[key] = (reply.gen, now + reply.wait_us / 1e6)
        elif known is not None:
            del opens[key]  # open at the known generation, its break over
        return None

    def _reseed(self, key: str, gen: int, until: float) -> None:
        """Write back, in the background, the open state the store has lost (once per key
        at a time)."""
        if key in self._reseeding:
            return
        self._reseeding.add(key)
        self._keep(asyncio.ensure_future(self._reseed_task(key, gen, until)))

    async def _reseed_task(self, key: str, gen: int, until: float) -> None:
        # The shared store itself, never a fallback: locally the deadline is already in force.
        store = self.store.primary if isinstance(self.store, FallbackStore) else self.store
        delay = 0.05
        try:
            while True:
                left_us = math.ceil((until - time.monotonic()) * 1e6)
                if left_us <= 0:
                    return
                try:
                    reply = await store.breaker_record(self.spec, key, "restore", gen, "", left_us)
                except ResilienceError:
                    # Unreachable (or degraded): try again until the deadline passes.
                    await asyncio.sleep(min(delay, left_us / 1e6))
                    delay = min(delay * 2, 2.0)
                    continue
                if not reply.stale:
                    logger.warning(
                        "circuit breaker %r%s: the store had lost its open state; re-seeded it "
                        "(generation %d, %.3f s left)",
                        self.name,
                        f" [{key}]" if key else "",
                        gen,
                        reply.wait_us / 1e6,
                        extra={"breaker": self.name, "key": key},
                    )
                self._learn(key, reply)
                return
        except Exception:  # a third-party store's bug: the local deadline still holds
            logger.exception("circuit breaker %r: could not re-seed the store", self.name)
        finally:
            self._reseeding.discard(key)

    # ------------------------------------------------------------------ pushed transitions

    def _subscribe(self) -> None:
        """Follow the store's pushed transitions on the running loop (once per loop)."""
        if self._unsubscribe is not None:
            self._unsubscribe()  # a subscription of a previous event loop
            self._unsubscribe = None
        self._events_loop = asyncio.get_running_loop()
        self._events_up = False
        subscribe = getattr(self.store, "breaker_subscribe", None)
        if subscribe is None:
            return
        ref = weakref.WeakMethod(self._on_event)

        def on_event(message: str) -> None:
            method = ref()
            if method is not None:
                method(message)

        try:
            self._unsubscribe = subscribe(on_event)
        except Exception:  # pragma: no cover - a third-party store's bug: keep state_refresh
            logger.exception("circuit breaker %r: could not subscribe to its store", self.name)
            return
        weakref.finalize(self, self._unsubscribe)

    def _on_event(self, message: str) -> None:
        """A transition somewhere (``"<tag> <gen> <state>"``), or ``""``: events were lost."""
        views = self._views
        if not message:
            # (Re)subscribed: forget every belief except an open deadline still running.
            now = time.monotonic()
            for k in [k for k, v in views.items() if v.state == "closed" or now >= v.fresh_until]:
                del views[k]
            if self._events_up:
                # Re-established: the store may have restarted and lost the open states this
                # process knows; re-seed them (a no-op where the store still has them).
                for k, (gen, until) in list(self._opens.items()):
                    if now < until:
                        self._reseed(k, gen, until)
            self._events_up = True
            return
        tag, _, rest = message.partition(" ")
        key = self._tags.get(tag)
        if key is None:
            return
        v = views.get(key)
        if v is None:
            return
        gen_text, _, state = rest.partition(" ")
        try:
            gen = int(gen_text)
        except ValueError:
            gen = v.gen + 1
        if state == v.state and gen == v.gen:
            return  # this process already knows (it made the transition)
        v.fresh_until = 0.0  # ask at the next call (concurrent callers share one re-read)
        v.floor = max(v.floor, gen)

    # ------------------------------------------------------------------ the call path

    async def _acquire(self, key: str, ctx: CallContext | None) -> _Permit:
        refreshing: _View | None = None
        while True:
            v = self._views.get(key)
            if v is None:
                break
            now = time.monotonic()
            if now < v.fresh_until:
                if v.state == "closed":
                    return _permit(v.gen)  # the happy path: no round trip
                telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
                raise CircuitOpen(self.name, v.fresh_until - now)
            if v.state != "closed":
                break  # the break has ended: ask (probe permits are per call)
            if v.refresh is None:
                # "Closed" has expired: this task re-reads it; concurrent ones wait for the
                # answer (one round trip per process, and nobody runs on a stale belief).
                v.refresh = asyncio.get_running_loop().create_future()
                refreshing = v
                break
            await asyncio.shield(v.refresh)
        try:
            if self._shield:
                reply, local = await self._shielded(
                    key, self.store.breaker_acquire(self.spec, key), ctx
                )
                lost = self._learn(key, reply, local)
            else:
                reply = await self.store.breaker_acquire(self.spec, key)
                # A local store cannot lose state: nothing to check, only views to update.
                lost = self._learn(key, reply) if self.state_refresh > 0 else 0.0
        finally:
            if refreshing is not None and refreshing.refresh is not None:
                refreshing.refresh.set_result(None)
                refreshing.refresh = None
        permit = _Permit(reply.gen, reply.token) if reply.token else _permit(reply.gen)
        if reply.old:
            try:
                await self._transition(key, reply, ctx)
            except BaseException:
                # Cancelled while an async listener ran (the listeners go on in the
                # background): a granted probe returns its permit.
                if reply.token:
                    self._give_back(key, permit)
                raise
        if lost > 0:
            # The store has lost an open state this process knows: refuse until its deadline.
            if reply.token:
                self._give_back(key, permit)
            telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
            raise CircuitOpen(self.name, lost)
        if reply.permit == "deny":
            telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
            raise CircuitOpen(self.name, reply.wait_us / 1e6)
        return permit

    def _fallbacks(self) -> int:
        stats = self._fallback_stats
        return stats.total() if stats is not None else 0

    async def _shielded(
        self,
        key: str,
        op: Coroutine[Any, Any, BreakerReply],
        ctx: CallContext | None,
    ) -> tuple[BreakerReply, bool]:
        """Await a store operation that a cancellation must not lose; its reply, and whether
        the fallback took the decision (as far as this process can tell).

        The operation runs in a task of its own. If the caller is cancelled meanwhile, the
        cancellation propagates at once and the operation completes in the background, where
        its reply is processed as the caller would have: learned, its transition reported, a
        probe it granted returned.
        """
        before = self._fallbacks()
        fut = asyncio.ensure_future(op)
        try:
            reply = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(functools.partial(self._orphan, key, ctx, before))
            raise
        return reply, self._fallbacks() != before

    def _orphan(
        self, key: str, ctx: CallContext | None, before: int, fut: asyncio.Future[BreakerReply]
    ) -> None:
        """The reply of a store operation whose caller was cancelled (see :meth:`_shielded`)."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            logger.warning(
                "circuit breaker %r: a cancelled call's store operation failed: %s", self.name, exc
            )
            return
        reply = fut.result()
        self._learn(key, reply, self._fallbacks() != before)
        if reply.old and reply.old != reply.state:
            self._announce(key, reply, _open_ctx(ctx))
        if reply.token:
            self._give_back(key, _Permit(reply.gen, reply.token))

    def _give_back(self, key: str, permit: _Permit) -> None:
        """Return a probe permit in the background (its caller is gone)."""
        self._keep(
            asyncio.ensure_future(
                self.store.breaker_record(self.spec, key, "ignore", permit.gen, permit.token, 0)
            ),
            "could not return a probe permit",
        )

    def _keep(self, task: asyncio.Future[Any], failure: str = "a background task failed") -> None:
        """Hold a background task until it is done (logging ``failure`` if it fails)."""
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._forget_task, failure))

    def _forget_task(self, failure: str, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            logger.warning("circuit breaker %r: %s: %s", self.name, failure, exc)

    def _is_failure(self, exc: BaseException) -> bool | None:
        """``True`` failure, ``False`` success, ``None`` neither (never counted)."""
        if not isinstance(exc, Exception) or isinstance(exc, ResilienceError):
            return None
        if self._failure_on is None:
            return default_failure(exc)
        return bool(self._failure_on(exc))

    async def _settle(
        self,
        key: str,
        permit: _Permit,
        outcome: BreakerOutcomeName,
        hint_us: int,
        ctx: CallContext | None,
    ) -> None:
        """Record one outcome: probes always; in closed state only failures (count mode)."""
        telemetry.breaker_call(
            ctx,
            breaker=self.name,
            outcome="failure" if outcome == "fail" else "success" if outcome == "ok" else "ignored",
        )
        if not permit.token and outcome != "fail":
            return
        op = self.store.breaker_record(self.spec, key, outcome, permit.gen, permit.token, hint_us)
        local = False
        try:
            if self._shield:
                reply, local = await self._shielded(key, op, ctx)
            else:
                reply = await op
        except ResilienceError as exc:
            # Never mask the call's own outcome with a store error. A lost probe outcome
            # costs one probe lease; a lost failure is one failure not counted.
            logger.warning("circuit breaker %r: could not record an outcome: %s", self.name, exc)
            return
        self._learn(key, reply, local)
        if reply.old:
            await self._transition(key, reply, ctx)

    async def _release(self, key: str, permit: _Permit, ctx: CallContext | None) -> None:
        """A cancelled (or interrupted) probe returns its permit at once, shielded."""
        telemetry.breaker_call(ctx, breaker=self.name, outcome="ignored")
        if not permit.token:
            return
        try:
            await asyncio.shield(
                self.store.breaker_record(self.spec, key, "ignore", permit.gen, permit.token, 0)
            )
        except asyncio.CancelledError:
            pass
        except ResilienceError:
            logger.warning("circuit breaker %r: could not return a probe permit", self.name)

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Pipeline policy: fail fast with :class:`resilience.CircuitOpen` when open, else run
        ``call`` and record its outcome (see the class documentation for what counts)."""
        spec = self._key
        if spec is None:
            key = ""
        elif type(spec) is str:
            key = spec  # checked at construction
        else:
            key = call_key(resolve_key(spec, ctx), "key returned by the key callable")
        permit = await self._acquire(key, ctx)
        try:
            result = await call()
        except Exception as exc:
            try:
                failed = self._is_failure(exc)
            except BaseException:
                await self._release(key, permit, ctx)  # failure_on raised: neither outcome
                raise
            if failed is None:
                await self._release(key, permit, ctx)
            else:
                await self._settle(
                    key, permit, "fail" if failed else "ok", _hint_us(exc) if failed else 0, ctx
                )
            raise
        except BaseException:
            # CancelledError, KeyboardInterrupt, ...: never a failure; a probe's permit returns.
            await self._release(key, permit, ctx)
            raise
        if self._failure_if_result is not None:
            try:
                failed = bool(self._failure_if_result(result))
            except BaseException:
                await self._release(key, permit, ctx)  # the predicate raised: neither outcome
                raise
            if failed:
                await self._settle(key, permit, "fail", _hint_us(result), ctx)
                return result
        await self._settle(key, permit, "ok", 0, ctx)
        return result

    # ------------------------------------------------------------------ operators

    async def _admin(self, key: str, action: BreakerAction, duration_us: int) -> None:
        """One operator action, shielded like the call path: a cancelled operator's action
        that the store applied is still learned and reported."""
        op = self.store.breaker_admin(self.spec, key, action, duration_us)
        if self._shield:
            reply, local = await self._shielded(key, op, None)
            self._learn(key, reply, local)
        else:
            reply = await op
            self._learn(key, reply)
        await self._transition(key, reply, None)

    async def state(self, key: str | None = None) -> BreakerState:
        """The breaker's state for ``key`` as the store sees it now (one round trip).

        ``"half_open"`` also when the break has ended but no call has probed yet. ``"open"``
        when the store has lost an open state this process knows (it re-seeds the store).
        """
        k = call_key(key)
        reply = await self.store.breaker_admin(self.spec, k, "state", 0)
        if self._shield and k in self._opens and self._check_open(k, reply, False) is not None:
            return "open"
        return reply.state

    async def failures(self, key: str | None = None) -> int:
        """Failures counted in the current window for ``key`` (0 unless closed)."""
        reply = await self.store.breaker_admin(self.spec, call_key(key), "state", 0)
        return reply.failures

    async def open(self, key: str | None = None, duration: float | None = None) -> None:
        """Open the breaker for ``key`` now, for ``duration`` seconds (default
        ``break_duration``, at least :data:`MIN_DURATION`), fleet-wide. An open breaker gets
        the new deadline."""
        d = self.break_duration if duration is None else _duration("duration", duration)
        await self._admin(call_key(key), "open", round(d * 1e6))

    async def close(self, key: str | None = None) -> None:
        """Close the breaker for ``key`` now, fleet-wide: failures and probe permits are
        cleared and in-flight outcomes become stale; the trip count behind
        ``max_break_duration`` growth is kept (use :meth:`reset` to forget it)."""
        await self._admin(call_key(key), "close", 0)

    async def reset(self, key: str | None = None) -> None:
        """Forget everything about ``key``: closed, no failures, no probes, no trip count."""
        await self._admin(call_key(key), "reset", 0)
