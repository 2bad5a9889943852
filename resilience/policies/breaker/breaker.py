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
- **Cancellation** is never a failure, and a cancelled probe returns its permit at once.

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
import inspect
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

from resilience import telemetry
from resilience.errors import CircuitOpen, ResilienceError
from resilience.pipeline import CallContext, KeySpec, PolicyBase, resolve_key
from resilience.policies._validate import (
    MAX_SECONDS,
    check_key,
    check_name,
    check_store,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from resilience.stores.base import BreakerOutcomeName, BreakerReply, BreakerSpec, Store
from resilience.stores.fallback import FallbackMode, with_fallback
from resilience.stores.keys import breaker_tag
from resilience.stores.memory import MemoryStore

__all__ = [
    "DEFAULT_STATE_REFRESH",
    "BreakerState",
    "CircuitBreaker",
    "FailurePredicate",
    "ResultPredicate",
    "StateChange",
    "StateListener",
]

T = TypeVar("T")
logger = logging.getLogger("resilience")

#: ``state_refresh`` of a breaker on a shared store when none is given (seconds).
DEFAULT_STATE_REFRESH = 1.0

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


def _hint_us(obj: object) -> int:
    """An upstream ``retry_after`` hint carried by an exception or result, in µs (0: none)."""
    hint = getattr(obj, "retry_after", None)
    if isinstance(hint, bool) or not isinstance(hint, int | float):
        return 0
    if not math.isfinite(hint) or hint <= 0:
        return 0
    return math.ceil(min(hint, MAX_SECONDS) * 1e6)


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
        store: where the state lives: :class:`resilience.RedisStore` to share it across
            processes; default, the process-wide :class:`resilience.MemoryStore`. Breakers
            with the same ``name`` in the same store share their state (per key).
        name: identifies the breaker in the store, in :class:`resilience.CircuitOpen` and in
            telemetry.
        half_open_max_calls: probes allowed at once after the break, fleet-wide (default 1).
        success_threshold: successful probes that close the breaker (default 1).
        failure_on: which exceptions count as failures: an exception type, a tuple of them,
            or a predicate over the exception. Default: every :class:`Exception`. Never
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
            caches an open deadline. Default: :data:`DEFAULT_STATE_REFRESH` for a shared store,
            ``0`` for a :class:`resilience.MemoryStore` (whose decisions are already local).
        listeners: callables receiving each :class:`StateChange` made by this process (plain
            functions, or ``async def`` hooks whose coroutines are awaited). A listener that
            raises is logged and ignored.
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
        self.window = positive_seconds("window", window)
        self.break_duration = positive_seconds("break_duration", break_duration)
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
            self.max_break_duration = positive_seconds("max_break_duration", max_break_duration)
            if self.max_break_duration < self.break_duration:
                raise ValueError(
                    f"max_break_duration must be >= break_duration ({self.break_duration}), "
                    f"got {max_break_duration}"
                )
        self.probe_lease = (
            self.break_duration
            if probe_lease is None
            else positive_seconds("probe_lease", probe_lease)
        )
        local = isinstance(self.store, MemoryStore)
        if state_refresh is None:
            self.state_refresh = 0.0 if local else DEFAULT_STATE_REFRESH
        else:
            self.state_refresh = non_negative_seconds("state_refresh", state_refresh)
        # A MemoryStore decides without suspending, so its replies cannot be lost to a
        # cancellation; a remote store's acquire is shielded so a granted probe is returned.
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
        self._tasks: set[asyncio.Task[Any]] = set()

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

    async def _transition(self, key: str, reply: BreakerReply, ctx: CallContext | None) -> None:
        if not reply.old or reply.old == reply.state:
            return
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
        for fn in tuple(self._listeners):
            try:
                r = fn(change)
                if inspect.isawaitable(r):
                    await r
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("circuit breaker %r: listener %r failed", self.name, fn)

    # ------------------------------------------------------------------ local view

    def _learn(self, key: str, reply: BreakerReply) -> None:
        if self.state_refresh <= 0:
            return
        if self._events_loop is not asyncio.get_running_loop():
            self._subscribe()
        views = self._views
        v = views.get(key)
        now = time.monotonic()
        if v is not None and (reply.gen < v.floor or (reply.gen < v.gen and now < v.fresh_until)):
            return  # an older reply overtaken by a newer one (or by an announced transition)
        if reply.state == "closed":
            fresh = now + self.state_refresh
        elif reply.state == "open" and reply.wait_us > 0:
            fresh = now + reply.wait_us / 1e6
        else:
            views.pop(key, None)
            return
        if v is None:
            if len(views) >= _VIEW_MAX:
                views.clear()
                self._tags.clear()
            views[key] = _View(reply.state, reply.gen, fresh)
            if len(self._tags) < _VIEW_MAX:
                self._tags[breaker_tag(self.name, key)] = key
        else:
            v.state = reply.state
            v.gen = reply.gen
            v.fresh_until = fresh

    # ------------------------------------------------------------------ pushed transitions

    def _subscribe(self) -> None:
        """Follow the store's pushed transitions on the running loop (once per loop)."""
        if self._unsubscribe is not None:
            self._unsubscribe()  # a subscription of a previous event loop
            self._unsubscribe = None
        self._events_loop = asyncio.get_running_loop()
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
                reply = await self._shielded_acquire(key)
            else:
                reply = await self.store.breaker_acquire(self.spec, key)
            self._learn(key, reply)
        finally:
            if refreshing is not None and refreshing.refresh is not None:
                refreshing.refresh.set_result(None)
                refreshing.refresh = None
        if reply.old:
            await self._transition(key, reply, ctx)
        if reply.permit == "deny":
            telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
            raise CircuitOpen(self.name, reply.wait_us / 1e6)
        return _Permit(reply.gen, reply.token) if reply.token else _permit(reply.gen)

    async def _shielded_acquire(self, key: str) -> BreakerReply:
        fut = asyncio.ensure_future(self.store.breaker_acquire(self.spec, key))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled while the store decided: if it granted a probe, give it back.
            fut.add_done_callback(lambda f: self._return_orphan(key, f))
            raise

    def _return_orphan(self, key: str, fut: asyncio.Future[BreakerReply]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        reply = fut.result()
        if reply.token:
            task = asyncio.ensure_future(
                self.store.breaker_record(self.spec, key, "ignore", reply.gen, reply.token, 0)
            )
            self._tasks.add(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("circuit breaker %r: could not return a probe permit", self.name)

    def _is_failure(self, exc: BaseException) -> bool | None:
        """``True`` failure, ``False`` success, ``None`` neither (never counted)."""
        if not isinstance(exc, Exception) or isinstance(exc, ResilienceError):
            return None
        if self._failure_on is None:
            return True
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
        try:
            reply = await self.store.breaker_record(
                self.spec, key, outcome, permit.gen, permit.token, hint_us
            )
        except ResilienceError as exc:
            # Never mask the call's own outcome with a store error. A lost probe outcome
            # costs one probe lease; a lost failure is one failure not counted.
            logger.warning("circuit breaker %r: could not record an outcome: %s", self.name, exc)
            return
        self._learn(key, reply)
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
        key = resolve_key(self._key, ctx) or ""
        permit = await self._acquire(key, ctx)
        try:
            result = await call()
        except Exception as exc:
            failed = self._is_failure(exc)
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
        if self._failure_if_result is not None and self._failure_if_result(result):
            await self._settle(key, permit, "fail", _hint_us(result), ctx)
        else:
            await self._settle(key, permit, "ok", 0, ctx)
        return result

    # ------------------------------------------------------------------ operators

    async def state(self, key: str | None = None) -> BreakerState:
        """The breaker's state for ``key`` as the store sees it now (one round trip).

        ``"half_open"`` also when the break has ended but no call has probed yet.
        """
        reply = await self.store.breaker_admin(self.spec, key or "", "state", 0)
        return reply.state

    async def failures(self, key: str | None = None) -> int:
        """Failures counted in the current window for ``key`` (0 unless closed)."""
        reply = await self.store.breaker_admin(self.spec, key or "", "state", 0)
        return reply.failures

    async def open(self, key: str | None = None, duration: float | None = None) -> None:
        """Open the breaker for ``key`` now, for ``duration`` seconds (default
        ``break_duration``), fleet-wide. An open breaker gets the new deadline."""
        d = self.break_duration if duration is None else positive_seconds("duration", duration)
        k = key or ""
        reply = await self.store.breaker_admin(self.spec, k, "open", round(d * 1e6))
        self._learn(k, reply)
        await self._transition(k, reply, None)

    async def close(self, key: str | None = None) -> None:
        """Close the breaker for ``key`` now, fleet-wide: failures and probe permits are
        cleared and in-flight outcomes become stale; the trip count behind
        ``max_break_duration`` growth is kept (use :meth:`reset` to forget it)."""
        k = key or ""
        reply = await self.store.breaker_admin(self.spec, k, "close", 0)
        self._learn(k, reply)
        await self._transition(k, reply, None)

    async def reset(self, key: str | None = None) -> None:
        """Forget everything about ``key``: closed, no failures, no probes, no trip count."""
        k = key or ""
        reply = await self.store.breaker_admin(self.spec, k, "reset", 0)
        self._learn(k, reply)
        await self._transition(k, reply, None)
