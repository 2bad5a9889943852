"""The call span and the attempt spans: :func:`instrument_call` and :func:`instrument_attempt`.

The pipeline runs each logical call inside :func:`instrument_call` (one INTERNAL span named
after the operation) and each attempt inside :func:`instrument_attempt` (one INTERNAL span
``attempt <operation>``, a child of the call span). While a call runs, telemetry keeps a
:class:`CallRecord` in ``ctx.span``: the spans, the attempts and delays so far, and why a
retrier gave up. The event emitters (:mod:`resilience.telemetry._events`) read it to put their
events on our own spans, never on "whatever span is current".

With telemetry disabled both hooks are ``return await call()`` after the cached check.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context as _otel_context
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from resilience._context import CallContext, GiveUpReason
from resilience.telemetry import names
from resilience.telemetry._outcomes import call_outcome, error_type
from resilience.telemetry._provider import State, state

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "ATTEMPT",
    "CallRecord",
    "call_span",
    "current_attempt",
    "instrument_attempt",
    "instrument_call",
    "record",
]

T = TypeVar("T")

#: The attempt in progress in this task (1-based; 0 outside any attempt). Set by
#: :func:`instrument_attempt` while telemetry is enabled; read by the aiohttp request hook.
ATTEMPT: ContextVar[int] = ContextVar("resilience_attempt", default=0)


class CallRecord:
    """What telemetry keeps about one call while it runs (stored in ``ctx.span``)."""

    __slots__ = ("attempt_span", "attempts", "gave_up", "pipeline", "span", "total_delay")

    def __init__(self) -> None:
        self.span: Span | None = None
        self.attempt_span: Span | None = None
        self.attempts = 0
        self.total_delay = 0.0
        self.gave_up: GiveUpReason | None = None
        self.pipeline: str | None = None


def record(ctx: CallContext | None) -> CallRecord | None:
    """The :class:`CallRecord` of ``ctx``'s call, or ``None`` (no context, or not traced)."""
    if ctx is None:
        return None
    rec = ctx.span
    return rec if isinstance(rec, CallRecord) else None


def current_attempt() -> int:
    """The 1-based number of the attempt running in this task, or 0 outside any attempt.

    Only tracked while telemetry is enabled (see :func:`resilience.telemetry.enabled`).
    """
    return ATTEMPT.get()


def call_span(ctx: CallContext) -> Span | None:
    """The OpenTelemetry span of a running call (``None`` when not traced).

    Handy to read the trace id, e.g. ``format(call_span(ctx).get_span_context().trace_id,
    "032x")``.
    """
    rec = record(ctx)
    return rec.span if rec is not None else None


async def instrument_call(
    call: Callable[[], Awaitable[T]],
    ctx: CallContext,
    *,
    function: str | None = None,
    pipeline: str | None = None,
) -> T:
    """Run one logical call (all attempts) inside the call span.

    The span is INTERNAL, named ``ctx.operation``, current while ``call`` runs (so attempt
    spans and instrumented clients nest under it) and carries ``resilience.operation.name``,
    ``resilience.outcome``, ``resilience.retry.attempts`` and ``resilience.retry.total_delay``,
    plus ``code.function.name`` (``function``) and ``resilience.pipeline.name``
    (``pipeline``) when given. An exception escaping the call sets status ``ERROR``,
    ``error.type`` and an ``exception`` event; success (after any number of retries) and
    cancellation leave the status unset. Records ``resilience.call.duration``.

    With telemetry disabled this is ``return await call()``.
    """
    st = state()
    if not st.enabled:
        return await call()
    return await _traced_call(st, call, ctx, function, pipeline)


async def _traced_call(
    st: State,
    call: Callable[[], Awaitable[T]],
    ctx: CallContext,
    function: str | None,
    pipeline: str | None,
) -> T:
    op = ctx.operation
    rec = CallRecord()
    rec.pipeline = pipeline
    ctx.span = rec
    span = token = None
    if st.tracer is not None:
        attrs: dict[str, Any] = {names.ATTR_OPERATION_NAME: op}
        if function:
            attrs[names.ATTR_CODE_FUNCTION_NAME] = function
        if pipeline:
            attrs[names.ATTR_PIPELINE_NAME] = pipeline
        span = st.tracer.start_span(
            op,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        )
        rec.span = span
        token = _otel_context.attach(_trace.set_span_in_context(span))
    outcome = names.OUTCOME_SUCCESS
    etype: str | None = None
    start = time.perf_counter()
    try:
        return await call()
    except Exception as exc:
        outcome = call_outcome(exc, rec.gave_up)
        etype = error_type(exc)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
            span.set_attribute(names.ATTR_ERROR_TYPE, etype)
            span.record_exception(exc)
        raise
    except BaseException:  # CancelledError (or interpreter exit): not an error
        outcome = names.OUTCOME_CANCELLED
        raise
    finally:
        elapsed = time.perf_counter() - start
        if span is not None:
            _otel_context.detach(token)  # type: ignore[arg-type]
            end_attrs: dict[str, Any] = {names.ATTR_OUTCOME: outcome}
            if rec.attempts:
                end_attrs[names.ATTR_RETRY_ATTEMPTS] = rec.attempts
            if rec.total_delay:
                end_attrs[names.ATTR_RETRY_TOTAL_DELAY] = rec.total_delay
            span.set_attributes(end_attrs)  # one lock round in the SDK, not three
            span.end()
            rec.span = None  # late reports (after the call) must not touch an ended span
        inst = st.instruments
        if inst is not None:
            mattrs: dict[str, Any] = {names.ATTR_OPERATION_NAME: op, names.ATTR_OUTCOME: outcome}
            if pipeline:
                mattrs[names.ATTR_PIPELINE_NAME] = pipeline
            if etype is not None:
                mattrs[names.ATTR_ERROR_TYPE] = etype
            inst.call_duration.record(elapsed, mattrs)


async def instrument_attempt(call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    """Run one attempt (``ctx.attempt``, 1-based; 0 is treated as 1) inside an attempt span.

    The span is INTERNAL, named ``attempt <operation>``, a child of the call span, with
    ``resilience.operation.name`` and ``resilience.retry.attempt``. If the attempt raises an
    exception (other than a cancellation) it gets status ``ERROR`` and ``error.type`` but no
    ``exception`` event (a retried error is handled, per the semantic conventions). While it
    runs, :func:`current_attempt` returns its number (the aiohttp request hook reads it).
    Records ``resilience.retry.attempt.duration``.

    With telemetry disabled this is ``return await call()``.
    """
    st = state()
    if not st.enabled:
        return await call()
    return await _traced_attempt(st, call, ctx)


async def _traced_attempt(st: State, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    n = ctx.attempt if ctx.attempt > 0 else 1
    op = ctx.operation
    rec = record(ctx)
    if rec is not None and n > rec.attempts:
        rec.attempts = n
    span = token = None
    if st.tracer is not None:
        span = st.tracer.start_span(
            names.ATTEMPT_SPAN_PREFIX + op,
            kind=SpanKind.INTERNAL,
            attributes={names.ATTR_OPERATION_NAME: op, names.ATTR_RETRY_ATTEMPT: n},
            record_exception=False,
            set_status_on_exception=False,
        )
        token = _otel_context.attach(_trace.set_span_in_context(span))
        if rec is not None:
            rec.attempt_span = span
    attempt_token = ATTEMPT.set(n)
    etype: str | None = None
    start = time.perf_counter()
    try:
        return await call()
    except Exception as exc:
        etype = error_type(exc)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
            span.set_attribute(names.ATTR_ERROR_TYPE, etype)
        raise
    finally:
        elapsed = time.perf_counter() - start
        ATTEMPT.reset(attempt_token)
        if span is not None:
            _otel_context.detach(token)  # type: ignore[arg-type]
            if rec is not None and rec.attempt_span is span:
                rec.attempt_span = None
            span.end()
        inst = st.instruments
        if inst is not None:
            mattrs: dict[str, Any] = {
                names.ATTR_OPERATION_NAME: op,
                names.ATTR_RETRY_ATTEMPT: n,
            }
            if rec is not None and rec.pipeline:
                mattrs[names.ATTR_PIPELINE_NAME] = rec.pipeline
            if etype is not None:
                mattrs[names.ATTR_ERROR_TYPE] = etype
            inst.attempt_duration.record(elapsed, mattrs)
