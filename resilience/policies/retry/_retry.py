"""The retrier: jittered backoff, retry hints, a deadline for the whole call, a retry budget.

(A little over 400 lines: most of it is the exact semantics below and the option reference of
:class:`Retry`; the loop itself is one function.)

Semantics of one call under ``Retry(attempts, backoff=..., deadline=..., budget=...)``:

1. Attempt 1 runs. If it returns a result that ``retry_if_result`` does not flag, that result
   is returned; if it raises an exception that is not retryable (see
   :mod:`resilience.policies.retry._predicates`), that exception propagates unchanged (with a
   note when earlier attempts failed).
2. Otherwise the next delay is ``max(backoff(attempt, previous_delay), retry_after)``, capped at
   the strategy's ``max``; ``retry_after`` is the wait the failure asks for
   (:func:`resilience.policies._hints.requested_wait`: a ``retry_after`` attribute of the
   exception or flagged result, else the server's ``retry-after-ms`` / ``Retry-After`` /
   rate-limit reset carried by an HTTP error of any client or AI SDK). When the hint wins, the
   telemetry delay source is ``"rate_limit_header"`` if it came from a rate-limit field's
   reset, else ``"retry_after"``; otherwise it is ``"backoff"``. One exception to the cap: a
   :class:`resilience.CircuitOpen` whose break ends before the call's deadline is waited out
   whole, however long, so the next attempt can be the half-open probe (a worker with a 60 s
   deadline does not lose its job to a 30 s break).
3. The retrier gives up, re-raising the last exception, when: ``attempts`` are used up; the
   delay would end at or past the deadline (no attempt starts after it); a
   :class:`resilience.CircuitOpen` would still be open after the delay (without a deadline,
   the capped delay); or the budget refuses the retry. A flagged *result* is returned instead
   of raised. Why it gave up is a :class:`resilience.telemetry.GiveUpReason` (``ATTEMPTS``,
   ``DEADLINE``, ``CIRCUIT_OPEN``, ``BUDGET``, ``NOT_RETRYABLE``): telemetry reports it as the
   call's outcome, logs its value.
4. It logs the retry, sleeps, and runs the next attempt.

On giving up, the exception carries a PEP 678 note listing each attempt's error and delay.
``asyncio.CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` are never retried nor
counted as a failure: they propagate at once, from an attempt, a budget withdrawal or a backoff
sleep. The budget's books stay exact: a cancelled attempt was a request (deposit) or a retry
(withdrawal) that did start; a withdrawal cut by a cancellation is booked when its round trip
ends; a retry granted but never started (cancelled in its backoff sleep, or the deadline passed
meanwhile) is given back (:meth:`resilience.RetryBudget.refund`).

The deadline bounds everything: attempts run under a timeout that expires at the deadline (the
attempt is cancelled and its :class:`TimeoutError` surfaces), no sleep runs past it, and inner
policies see it in :attr:`CallContext.deadline <resilience.CallContext>` (a rate limiter waits
no longer than the time left).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from resilience import telemetry
from resilience._context import GiveUpReason
from resilience._deadline import run_bounded
from resilience.backoff import exponential
from resilience.errors import CircuitOpen
from resilience.http import client_retries
from resilience.pipeline import CallContext, PolicyBase
from resilience.policies._validate import (
    check_callable,
    check_instance,
    check_name,
    positive_int,
    positive_seconds,
)
from resilience.policies.retry._budget import RetryBudget
from resilience.policies.retry._predicates import (
    RetryOn,
    compile_retry_on,
    hint_of,
    hint_source_of,
)

__all__ = ["Retry"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

_monotonic = time.monotonic
_instrument_attempt = telemetry.instrument_attempt
_enabled = telemetry.enabled


class _TestingState:
    """Set by :func:`resilience.testing.set_testing`: no sleeps, attempts capped."""

    __slots__ = ("active", "attempts")

    def __init__(self) -> None:
        self.active = False
        self.attempts = 1


TESTING = _TestingState()


def add_note(exc: BaseException, note: str) -> None:
    """PEP 678 ``add_note``, with the ``__notes__`` fallback for Python 3.10."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover - exercised on 3.10 only
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
        notes.append(note)
        exc.__notes__ = notes  # type: ignore[attr-defined]


def _bounded(call: Callable[[], Awaitable[T]], ctx: CallContext) -> Awaitable[T]:
    """One attempt, cancelled at ``ctx.deadline`` (then :class:`TimeoutError`)."""
    deadline = ctx.deadline
    assert deadline is not None
    if ctx.observed and _enabled():
        return run_bounded(functools.partial(_instrument_attempt, call, ctx), deadline)
    return run_bounded(call, deadline)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "result rejected by retry_if_result"
    return f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__


class Retry(PolicyBase):
    """Retry a failing call with jittered exponential backoff, bounded by attempts, a deadline
    and an optional fleet-wide budget.

    Usable as a decorator (``@Retry(...)``), through ``await retry.call(fn, *args)``, and as a
    :class:`resilience.Pipeline` policy, where every attempt runs the policies inside it
    (``Pipeline(Retry(...), limiter)``: each attempt takes a limiter permit).

    Args:
        attempts: the most attempts per call, first included (``>= 1``; ``1`` never retries).
        backoff: the delay strategy: :func:`resilience.backoff.exponential` (the default:
            ``initial=1.0, multiplier=2.0, max=60.0, jitter="full"``),
            :func:`resilience.backoff.constant`, or any callable
            ``(attempt, previous_delay) -> seconds``; its ``max`` attribute, if any, caps every
            delay, hints included.
        retry_on: which exceptions to retry: a type, a tuple of types, or a predicate over the
            exception. Default: :class:`resilience.Retryable` subclasses, exceptions carrying a
            numeric ``retry_after``, :class:`TimeoutError` and :class:`ConnectionError`. The
            library's own errors follow fixed rules (see
            :mod:`resilience.policies.retry._predicates`).
        retry_if_result: a predicate over a *returned* value: ``True`` means "this result is a
            failure, retry" (APIs that return errors). A ``retry_after`` attribute on the
            result is honoured as a hint. When retries run out, the last result is returned.
        deadline: seconds for the whole call, attempts and sleeps together (``> 0``): no
            attempt starts after it, a running attempt is cancelled at it, and no sleep runs
            past it. The tighter of this and an enclosing deadline applies.
        budget: a :class:`resilience.RetryBudget` shared by the calls (fleet-wide through a
            Redis store); each call deposits, each retry withdraws.
        name: the policy's name in logs, notes and telemetry (default ``"retry"``).

    Raises:
        TypeError, ValueError: at construction, naming the offending parameter.
    """

    #: Tells :class:`resilience.Pipeline` that this policy opens one span per attempt.
    starts_attempts = True

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: Callable[[int, float], float] | None = None,
        retry_on: RetryOn = None,
        retry_if_result: Callable[[Any], bool] | None = None,
        deadline: float | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
    ) -> None:
        self.attempts = positive_int("attempts", attempts)
        if backoff is None:
            backoff = exponential()
        else:
            check_callable(
                "backoff",
                backoff,
                "a strategy from resilience.backoff or a callable "
                "(attempt, previous_delay) -> seconds",
            )
        cap = getattr(backoff, "max", math.inf)
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap >= 0:
            raise ValueError(f"backoff.max must be a number of seconds >= 0, got {cap!r}")
        self.backoff = backoff
        self._cap = float(cap)
        self._client_retry_warned = False
        self.retry_on = retry_on
        self._retryable = compile_retry_on(retry_on)
        if retry_if_result is not None:
            check_callable("retry_if_result", retry_if_result, "a predicate over the result")
        self.retry_if_result = retry_if_result
        self.deadline = None if deadline is None else positive_seconds("deadline", deadline)
        if budget is not None:
            check_instance("budget", budget, RetryBudget)
        self.budget = budget
        self.name = "retry" if name is None else check_name(name)

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self.attempts}, backoff={self.backoff!r}, "
            f"deadline={self.deadline}, budget={self.budget!r}, name={self.name!r})"
        )

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Pipeline policy: run ``call`` (the rest of the chain) with retries (see the class)."""
        budget = self.budget
        if budget is not None:
            budget.deposit()
        ctx.attempt = 1
        exc: Exception | None = None
        result: Any = None
        outer: float | None
        if self.deadline is None:
            if ctx.deadline is None:
                # The hot path: one attempt, no deadline.
                try:
                    if ctx.observed:  # the pipeline found telemetry on when the call started
                        result = await _instrument_attempt(call, ctx)
                    else:
                        result = await call()
                except Exception as e:
                    exc = e
                if exc is None and (
                    self.retry_if_result is None or not self.retry_if_result(result)
                ):
                    return result  # type: ignore[no-any-return]
                return await self._retry(call, ctx, exc, result)
            outer = ctx.deadline
        else:
            outer = ctx.deadline
            d = _monotonic() + self.deadline
            if outer is None or d < outer:
                ctx.deadline = d
        # A deadline applies (ours, or an enclosing one we honour in our sleeps).
        try:
            try:
                if self.deadline is None:
                    result = await _instrument_attempt(call, ctx)
                else:
                    result = await _bounded(call, ctx)
            except Exception as e:
                exc = e
            if exc is None and (self.retry_if_result is None or not self.retry_if_result(result)):
                return result  # type: ignore[no-any-return]
            return await self._retry(call, ctx, exc, result)
        finally:
            ctx.deadline = outer

    def _warn_if_the_client_retried(self, exc: BaseException) -> None:
        count = client_retries(exc)
        if count > 0:
            self._client_retry_warned = True
            logger.warning(
                "%s: %s failed after the client had already retried it %d time(s) by itself "
                "(x-stainless-retry-count): attempts multiply; give the SDK max_retries=0 "
                "(e.g. AsyncOpenAI(..., max_retries=0)) so that only this Retry retries "
                "(logged once per Retry)",
                self.name,
                type(exc).__qualname__,
                count,
            )

    async def _retry(
        self,
        call: Callable[[], Awaitable[T]],
        ctx: CallContext,
        exc: Exception | None,
        result: Any,
    ) -> T:
        """Attempts 2..n, after attempt 1 failed with ``exc`` (or a flagged ``result``)."""
        if exc is not None and not self._client_retry_warned:
            self._warn_if_the_client_retried(exc)
        max_attempts = self.attempts
        testing = TESTING.active
        if testing and TESTING.attempts < max_attempts:
            max_attempts = TESTING.attempts
        history: list[tuple[int, str, float]] = []
        attempt = 1
        prev_delay = 0.0
        own_deadline = self.deadline is not None
        pred = self.retry_if_result
        while True:
            # -- decide whether and when to retry
            reason: GiveUpReason | None = None
            hint: float | None = None
            delay = 0.0
            source: telemetry.DelaySource = "backoff"
            if exc is not None and not self._retryable(exc):
                reason = GiveUpReason.NOT_RETRYABLE
            else:
                hint = hint_of(exc if exc is not None else result)
                if attempt >= max_attempts:
                    reason = GiveUpReason.ATTEMPTS
            if reason is None:
                delay = self._delay(attempt, prev_delay)
                if hint is not None and hint > delay:
                    delay = hint
                    source = hint_source_of(exc if exc is not None else result)
                if delay > self._cap:
                    # A break that ends within the call's deadline is waited out, past the
                    # cap: the next attempt can be the half-open probe.
                    delay = (
                        hint
                        if isinstance(exc, CircuitOpen)
                        and hint is not None
                        and ctx.deadline is not None
                        and _monotonic() + hint < ctx.deadline
                        else self._cap
                    )
                if isinstance(exc, CircuitOpen) and hint is not None and delay < hint:
                    reason = GiveUpReason.CIRCUIT_OPEN
                elif ctx.deadline is not None and _monotonic() + delay >= ctx.deadline:
                    reason = GiveUpReason.DEADLINE
                elif self.budget is not None and not await self.budget.withdraw():
                    reason = GiveUpReason.BUDGET
            if reason is not None:
                return cast(T, self._give_up(ctx, exc, result, reason, attempt, history))
            # -- retry
            history.append((attempt, _describe(exc), delay))
            what = type(exc).__qualname__ if exc is not None else "result"
            if logger.isEnabledFor(logging.WARNING):
                logger.warning(
                    "%s: attempt %d of %s failed (%s); retrying in %.3fs",
                    self.name,
                    attempt,
                    ctx.operation,
                    what,
                    delay,
                    extra={
                        "policy": self.name,
                        "operation": ctx.operation,
                        "attempt": attempt,
                        "delay": delay,
                        "reason": what,
                        "delay_source": source,
                    },
                )
            telemetry.retry_scheduled(
                ctx, policy=self.name, attempt=attempt, delay=delay, source=source, error=exc
            )
            if delay > 0 and not testing:
                try:
                    await asyncio.sleep(delay)
                except BaseException:
                    # Cancelled while waiting: the granted retry will not run; give it back.
                    if self.budget is not None:
                        self.budget.refund()
                    raise
            if ctx.deadline is not None and _monotonic() >= ctx.deadline:
                # Sleep overshoot: the deadline passed while sleeping; start nothing (and give
                # the granted retry back).
                if self.budget is not None:
                    self.budget.refund()
                gave_up = self._give_up(ctx, exc, result, GiveUpReason.DEADLINE, attempt, history)
                return cast(T, gave_up)
            attempt += 1
            prev_delay = delay
            ctx.attempt = attempt
            exc = None
            try:
                if own_deadline:
                    result = await _bounded(call, ctx)
                else:
                    result = await _instrument_attempt(call, ctx)
            except Exception as e:
                exc = e
            if exc is None and (pred is None or not pred(result)):
                return result  # type: ignore[no-any-return]

    def _delay(self, attempt: int, prev_delay: float) -> float:
        d = self.backoff(attempt, prev_delay)
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < math.inf:
            raise ValueError(
                f"backoff returned {d!r} for attempt {attempt}: it must return a finite number "
                "of seconds >= 0"
            )
        return float(d)

    def _give_up(
        self,
        ctx: CallContext,
        exc: Exception | None,
        result: Any,
        reason: GiveUpReason,
        attempt: int,
        history: list[tuple[int, str, float]],
    ) -> Any:
        if reason is not GiveUpReason.NOT_RETRYABLE or history:
            telemetry.retry_exhausted(ctx, policy=self.name, attempts=attempt, reason=reason)
        if reason is GiveUpReason.NOT_RETRYABLE and not history:
            assert exc is not None
            raise exc
        why = {
            GiveUpReason.ATTEMPTS: f"all {attempt} attempts failed",
            GiveUpReason.DEADLINE: f"deadline of {self._deadline_text(ctx)} reached",
            GiveUpReason.BUDGET: (
                f"retry budget {self.budget.name if self.budget else ''!r} exhausted"
            ),
            GiveUpReason.CIRCUIT_OPEN: "circuit breaker stays open longer than the backoff allows",
            GiveUpReason.NOT_RETRYABLE: "error is not retryable",
        }[reason]
        lines = [f"{self.name}: gave up after {attempt} attempt(s) of {ctx.operation}: {why}"]
        for n, desc, delay in history:
            lines.append(f"  attempt {n}: {desc}; retried after {delay:.3f}s")
        lines.append(f"  attempt {attempt}: {_describe(exc)}")
        if history or reason is not GiveUpReason.ATTEMPTS:
            logger.warning(
                "%s: gave up on %s after %d attempt(s): %s",
                self.name,
                ctx.operation,
                attempt,
                reason.value,
                extra={
                    "policy": self.name,
                    "operation": ctx.operation,
                    "attempt": attempt,
                    "reason": reason.value,
                },
            )
        if exc is None:
            return result
        add_note(exc, "\n".join(lines))
        raise exc

    def _deadline_text(self, ctx: CallContext) -> str:
        return f"{self.deadline}s" if self.deadline is not None else "the enclosing call"
