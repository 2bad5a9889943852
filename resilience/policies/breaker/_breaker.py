"""The :class:`CircuitBreaker` policy: its settings, call path and operator methods.

The semantics are documented in :mod:`resilience.policies.breaker`, with the package's
layout. Here: admitting a call (on what this process believes when that is fresh, else with
one store round trip), recording its outcome, and the operators' actions. On the closed happy
path a call reads the breaker's own attributes only (the view's dict is aliased as
``_views``); the parts it delegates to (learning a reply, reporting a transition, the promises
kept to a cancelled caller) are reached only after a store round trip.

(A little over 400 lines: a hundred of them are the class docstring, the reference of every
option; the code itself is about 300.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from resilience import telemetry
from resilience.errors import CircuitOpen, ResilienceError, library_error
from resilience.pipeline import CallContext, KeySpec, PolicyBase, resolve_key
from resilience.policies._hints import requested_wait
from resilience.policies._registry import Registered, note_breaker
from resilience.policies._validate import MAX_SECONDS, call_key, local_shortcut
from resilience.policies.breaker._options import (
    DEFAULT_STATE_REFRESH,
    MIN_DURATION,
    BreakerState,
    FailurePredicate,
    ResultPredicate,
    StateChange,
    StateListener,
    breaker_duration,
    breaker_options,
    default_failure,
)
from resilience.policies.breaker._promises import Promises
from resilience.policies.breaker._report import Reporter
from resilience.policies.breaker._sync import SyncedView
from resilience.policies.breaker._tasks import Background
from resilience.policies.breaker._view import KeyView, Permit, local_permit
from resilience.stores import FallbackMode
from resilience.stores.base import (
    BreakerAction,
    BreakerOutcomeName,
    BreakerSpec,
    Store,
)

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


def _hint_us(obj: object) -> int:
    """The wait an exception or result asks for (:func:`requested_wait`), in µs (0: none)."""
    hint = requested_wait(obj)
    if hint is None or hint.seconds <= 0:
        return 0
    return math.ceil(min(hint.seconds, MAX_SECONDS) * 1e6)


def _permit(held: Permit | None, gen: int | None) -> Permit:
    """What a call holds: the permit it was granted, else a closed breaker's of ``gen``."""
    if held is not None:
        return held
    assert gen is not None
    return local_permit(gen)


class CircuitBreaker(Registered, PolicyBase):
    """Open after ``failure_threshold`` failures within ``window`` s, for ``break_duration`` s.

    Usable as a decorator (``@breaker``), as a pipeline policy, and directly
    (``await breaker.call(fn, *args)``). See :mod:`resilience.policies.breaker` for the exact
    semantics.

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
            :class:`resilience.StoreUnavailable`); see :class:`resilience.FallbackStore`.
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
        o = breaker_options(
            failure_threshold,
            window,
            break_duration,
            store=store,
            name=name,
            half_open_max_calls=half_open_max_calls,
            success_threshold=success_threshold,
            failure_on=failure_on,
            failure_if_result=failure_if_result,
            key=key,
            max_break_duration=max_break_duration,
            probe_lease=probe_lease,
            state_refresh=state_refresh,
            listeners=listeners,
            fallback=fallback,
        )
        # The settings as plain attributes: the call path reads them directly.
        self.failure_threshold = o.failure_threshold
        self.window = o.window
        self.break_duration = o.break_duration
        self.name = o.name
        self.half_open_max_calls = o.half_open_max_calls
        self.success_threshold = o.success_threshold
        self.store: Store = o.store
        self.max_break_duration = o.max_break_duration
        self.probe_lease = o.probe_lease
        self.state_refresh = o.state_refresh
        self.spec: BreakerSpec = o.spec
        self._failure_on = o.failure_on
        self._failure_if_result = o.failure_if_result
        self._key = o.key
        # A MemoryStore decides without suspending, so its replies cannot be lost to a
        # cancellation, and it cannot lose state behind this process's back. A remote store's
        # operations are shielded (a reply is always processed: a granted probe returned, a
        # transition reported), and the open deadlines learned from it are kept.
        self._shield = not o.local
        background = Background(self.name)
        self._report = Reporter(self.name, o.listeners, background)
        self._view = SyncedView(self.spec, self.store, self.state_refresh, self._shield, background)
        self._views = self._view.views  # the same dict: one lookup less per call
        self._promises = Promises(
            self.spec, self.store, o.fallback_stats, self._view, self._report, background
        )
        # A store whose decisions are local may admit a call on a closed breaker synchronously
        # (``MemoryStore.breaker_admit``): with nothing to cache (``state_refresh`` 0), the
        # closed happy path then asks it without a coroutine.
        self._admit: Callable[[BreakerSpec, str], int | None] | None = (
            local_shortcut(self.store, "breaker_admit") if self.state_refresh <= 0 else None
        )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failure_threshold={self.failure_threshold}, window={self.window}, "
            f"break_duration={self.break_duration}, name={self.name!r}, store={self.store!r})"
        )

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener`` with every :class:`StateChange` this process performs."""
        self._report.add(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener`` (``ValueError`` if it was not added)."""
        self._report.listeners.remove(listener)

    @property
    def listeners(self) -> Sequence[StateListener]:
        """The registered listeners, in call order."""
        return tuple(self._report.listeners)

    # ------------------------------------------------------------------ the call path

    async def _acquire(self, key: str, ctx: CallContext | None) -> Permit:
        refreshing: KeyView | None = None
        while True:
            v = self._views.get(key)
            if v is None:
                break
            now = time.monotonic()
            if now < v.fresh_until:
                if v.state == "closed":
                    return local_permit(v.gen)  # the happy path: no round trip
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
                reply, local = await self._promises.shielded(
                    key, self.store.breaker_acquire(self.spec, key), ctx
                )
                lost = self._view.learn(key, reply, local)
            else:
                reply = await self.store.breaker_acquire(self.spec, key)
                # A local store cannot lose state: nothing to check, only views to update.
                lost = self._view.learn(key, reply) if self.state_refresh > 0 else 0.0
        finally:
            if refreshing is not None and refreshing.refresh is not None:
                refreshing.refresh.set_result(None)
                refreshing.refresh = None
        permit = Permit(reply.gen, reply.token) if reply.token else local_permit(reply.gen)
        if reply.old:
            try:
                await self._report.transition(key, reply, ctx)
            except BaseException:
                # Cancelled while an async listener ran (the listeners go on in the
                # background): a granted probe returns its permit.
                if reply.token:
                    self._promises.give_back(key, permit)
                raise
        if lost > 0:
            # The store has lost an open state this process knows: refuse until its deadline.
            if reply.token:
                self._promises.give_back(key, permit)
            telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
            raise CircuitOpen(self.name, lost)
        if reply.permit == "deny":
            telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
            raise CircuitOpen(self.name, reply.wait_us / 1e6)
        return permit

    def _is_failure(self, exc: BaseException) -> bool | None:
        """``True`` failure, ``False`` success, ``None`` neither (never counted)."""
        if not isinstance(exc, Exception) or library_error(exc) is not None:
            return None  # cancellation, exits, a policy's refusal (possibly client-wrapped)
        if self._failure_on is None:
            return default_failure(exc)
        return bool(self._failure_on(exc))

    async def _settle(
        self,
        key: str,
        permit: Permit,
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
                reply, local = await self._promises.shielded(key, op, ctx)
            else:
                reply = await op
        except ResilienceError as exc:
            # Never mask the call's own outcome with a store error. A lost probe outcome
            # costs one probe lease; a lost failure is one failure not counted.
            logger.warning("circuit breaker %r: could not record an outcome: %s", self.name, exc)
            return
        self._view.learn(key, reply, local)
        if reply.old:
            await self._report.transition(key, reply, ctx)

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
        if key not in self._seen:  # the operator tools' registry (policies/_registry)
            note_breaker(self, key)
        admit = self._admit
        gen = None if admit is None else admit(self.spec, key)
        # Admitted on a closed breaker by a local store (``gen``), the call holds no permit
        # (it is no probe): one is made only if an outcome is to be recorded.
        held = await self._acquire(key, ctx) if gen is None else None
        try:
            result = await call()
        except Exception as exc:
            permit = _permit(held, gen)
            try:
                failed = self._is_failure(exc)
            except BaseException:
                # failure_on raised: neither outcome.
                await self._promises.release(key, permit, ctx)
                raise
            if failed is None:
                await self._promises.release(key, permit, ctx)
            else:
                await self._settle(
                    key, permit, "fail" if failed else "ok", _hint_us(exc) if failed else 0, ctx
                )
            raise
        except BaseException:
            # CancelledError, KeyboardInterrupt, ...: never a failure; a probe's permit returns.
            await self._promises.release(key, _permit(held, gen), ctx)
            raise
        if self._failure_if_result is not None:
            permit = _permit(held, gen)
            try:
                failed = bool(self._failure_if_result(result))
            except BaseException:
                # The predicate raised: neither outcome.
                await self._promises.release(key, permit, ctx)
                raise
            if failed:
                await self._settle(key, permit, "fail", _hint_us(result), ctx)
                return result
        if held is not None and held.token:
            await self._settle(key, held, "ok", 0, ctx)  # a probe's success: recorded
        elif ctx.observed:
            # A success in closed state is not recorded (count mode): only counted.
            telemetry.breaker_call(ctx, breaker=self.name, outcome="success")
        return result

    # ------------------------------------------------------------------ operators

    async def _admin(self, key: str, action: BreakerAction, duration_us: int) -> None:
        """One operator action, shielded like the call path: a cancelled operator's action
        that the store applied is still learned and reported."""
        op = self.store.breaker_admin(self.spec, key, action, duration_us)
        if self._shield:
            reply, local = await self._promises.shielded(key, op, None)
            self._view.learn(key, reply, local)
        else:
            reply = await op
            self._view.learn(key, reply)
        await self._report.transition(key, reply, None)

    async def state(self, key: str | None = None) -> BreakerState:
        """The breaker's state for ``key`` as the store sees it now (one round trip).

        ``"half_open"`` also when the break has ended but no call has probed yet. ``"open"``
        when the store has lost an open state this process knows (it re-seeds the store).
        """
        k = call_key(key)
        reply = await self.store.breaker_admin(self.spec, k, "state", 0)
        view = self._view
        if self._shield and k in view.opens and view.lost_open(k, reply, False) is not None:
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
        d = self.break_duration if duration is None else breaker_duration("duration", duration)
        await self._admin(call_key(key), "open", round(d * 1e6))

    async def close(self, key: str | None = None) -> None:
        """Close the breaker for ``key`` now, fleet-wide: failures and probe permits are
        cleared and in-flight outcomes become stale; the trip count behind
        ``max_break_duration`` growth is kept (use :meth:`reset` to forget it)."""
        await self._admin(call_key(key), "close", 0)

    async def reset(self, key: str | None = None) -> None:
        """Forget everything about ``key``: closed, no failures, no probes, no trip count."""
        await self._admin(call_key(key), "reset", 0)
