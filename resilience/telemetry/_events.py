"""What policies and stores report: one emitter per event, grouped by who reports it.

Each emitter records its metrics and, where it has a call (``ctx``), adds its span event to our
own call or attempt span (the :class:`~resilience.telemetry._spans.CallRecord` in ``ctx.span``),
never to "whatever span is current". With telemetry disabled each returns after the cached
check.

- retries: :func:`retry_scheduled`, :func:`retry_exhausted`;
- rate limiters: :func:`limiter_decision`;
- circuit breakers: :func:`breaker_state_change`, :func:`breaker_call`;
- stores (degraded mode and fallbacks): :func:`store_degraded`, :func:`store_fallback`.
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry import trace as _trace

from resilience._context import CallContext, GiveUpReason
from resilience.telemetry import names
from resilience.telemetry._outcomes import error_type
from resilience.telemetry._provider import state as _state
from resilience.telemetry._spans import record

__all__ = [
    "BreakerOutcome",
    "DelaySource",
    "LimiterResult",
    "breaker_call",
    "breaker_state_change",
    "limiter_decision",
    "retry_exhausted",
    "retry_scheduled",
    "store_degraded",
    "store_fallback",
]

LimiterResult = Literal["admitted", "waited", "rejected"]
BreakerOutcome = Literal["success", "failure", "rejected", "ignored"]
DelaySource = Literal["backoff", "retry_after", "rate_limit_header"]

# -- retries ----------------------------------------------------------------------------------


def retry_scheduled(
    ctx: CallContext | None,
    *,
    policy: str,
    attempt: int,
    delay: float,
    source: DelaySource,
    error: BaseException | None,
) -> None:
    """A retry was scheduled after ``attempt`` failed; the next one starts in ``delay`` s.

    Call it before sleeping. Adds a ``resilience.retry.scheduled`` event to the call span
    (``resilience.retry.attempt`` = the attempt that failed, ``resilience.retry.delay``,
    ``resilience.retry.delay_source``, ``error.type``, ``resilience.retry.name`` = ``policy``
    when not empty), adds ``delay`` to the call's ``resilience.retry.total_delay``, counts
    ``resilience.retries`` and records ``resilience.retry.delay``.
    """
    st = _state()
    if not st.enabled:
        return
    etype = error_type(error) if error is not None else None
    rec = record(ctx)
    if rec is not None:
        rec.total_delay += delay
        if rec.span is not None:
            attrs: dict[str, Any] = {
                names.ATTR_RETRY_ATTEMPT: attempt,
                names.ATTR_RETRY_DELAY: float(delay),
                names.ATTR_RETRY_DELAY_SOURCE: source,
            }
            if etype is not None:
                attrs[names.ATTR_ERROR_TYPE] = etype
            if policy:
                attrs[names.ATTR_RETRY_NAME] = policy
            rec.span.add_event(names.EVENT_RETRY_SCHEDULED, attrs)
    inst = st.instruments
    if inst is not None:
        mattrs: dict[str, Any] = {names.ATTR_RETRY_DELAY_SOURCE: source}
        if ctx is not None:
            mattrs[names.ATTR_OPERATION_NAME] = ctx.operation
        # A fresh dict for each instrument: SDKs before 1.3x keep the mapping they are given.
        inst.retry_delay.record(delay, dict(mattrs))
        if rec is not None and rec.pipeline:
            mattrs[names.ATTR_PIPELINE_NAME] = rec.pipeline
        if etype is not None:
            mattrs[names.ATTR_ERROR_TYPE] = etype
        inst.retries.add(1, mattrs)


def retry_exhausted(
    ctx: CallContext | None, *, policy: str, attempts: int, reason: GiveUpReason
) -> None:
    """The retrier gave up, for ``reason`` (a :class:`~resilience.telemetry.GiveUpReason`).

    Sets the call's ``resilience.outcome`` when the error escapes: ``ATTEMPTS`` gives
    ``exhausted``, ``DEADLINE`` ``deadline_exceeded``, ``BUDGET`` ``budget_exhausted``,
    ``CIRCUIT_OPEN`` ``circuit_open`` and ``NOT_RETRYABLE`` ``non_retryable``.
    """
    rec = record(ctx)
    if rec is not None:
        rec.gave_up = reason
        if attempts > rec.attempts:
            rec.attempts = attempts


# -- rate limiters ----------------------------------------------------------------------------


def limiter_upstream_limit(
    ctx: CallContext | None, *, limiter: str, quota: str, limit: int, configured: int
) -> None:
    """A limiter adopted the upstream's lower ``limit`` for its ``quota`` (or, with ``limit ==
    configured``, went back to its configured limit).

    Records the ``resilience.rate_limiter.limit`` gauge and adds a
    ``resilience.rate_limiter.upstream_limit`` event to the attempt span if the limiter runs
    inside an attempt, else to the call span.
    """
    st = _state()
    if not st.enabled:
        return
    attrs: dict[str, str | int] = {
        names.ATTR_RATE_LIMITER_NAME: limiter,
        names.ATTR_RATE_LIMITER_QUOTA: quota,
        names.ATTR_RATE_LIMITER_LIMIT: limit,
        names.ATTR_RATE_LIMITER_CONFIGURED_LIMIT: configured,
    }
    inst = st.instruments
    if inst is not None:
        inst.limiter_limit.set(limit, {names.ATTR_RATE_LIMITER_NAME: limiter})
    rec = record(ctx)
    if rec is not None:
        target = rec.attempt_span or rec.span
        if target is not None:
            target.add_event(names.EVENT_RATE_LIMITER_UPSTREAM_LIMIT, attrs)


def limiter_decision(
    ctx: CallContext | None,
    *,
    limiter: str,
    result: LimiterResult,
    wait: float,
    duration: float,
) -> None:
    """A limiter admitted a call (after ``wait`` s of waiting) or rejected it.

    ``duration`` is the time spent in acquire, decision round trip and wait included.
    Counts ``resilience.rate_limiter.requests`` and records
    ``resilience.rate_limiter.acquire.duration`` (``resilience.rate_limiter.result`` is
    ``acquired`` for ``admitted`` and ``waited``, else ``rejected``). When the call waited or
    was rejected, adds a ``resilience.rate_limiter.throttled`` event to the attempt span if
    the limiter runs inside an attempt, else to the call span.
    """
    st = _state()
    if not st.enabled:
        return
    res = names.LIMITER_RESULT_REJECTED if result == "rejected" else names.LIMITER_RESULT_ACQUIRED
    inst = st.instruments
    if inst is not None:
        mattrs = {names.ATTR_RATE_LIMITER_NAME: limiter, names.ATTR_RATE_LIMITER_RESULT: res}
        inst.limiter_requests.add(1, mattrs)
        inst.acquire_duration.record(duration, mattrs)
    if result != "admitted":
        rec = record(ctx)
        if rec is not None:
            target = rec.attempt_span or rec.span
            if target is not None:
                target.add_event(
                    names.EVENT_RATE_LIMITER_THROTTLED,
                    {
                        names.ATTR_RATE_LIMITER_NAME: limiter,
                        names.ATTR_RATE_LIMITER_RESULT: res,
                        names.ATTR_RATE_LIMITER_WAIT_TIME: float(wait),
                    },
                )


# -- circuit breakers -------------------------------------------------------------------------

_BREAKER_STATES = (
    names.BREAKER_STATE_CLOSED,
    names.BREAKER_STATE_OPEN,
    names.BREAKER_STATE_HALF_OPEN,
)


def _state_name(name: str) -> str:
    return name.lower().replace("-", "_")


def _set_breaker_state(gauge: Any, breaker: str, current: str) -> None:
    for s in _BREAKER_STATES:
        gauge.set(
            1 if s == current else 0,
            {names.ATTR_CIRCUIT_BREAKER_NAME: breaker, names.ATTR_CIRCUIT_BREAKER_STATE: s},
        )


def breaker_state_change(ctx: CallContext | None, *, breaker: str, old: str, new: str) -> None:
    """This process's script performed a breaker transition (emitted once fleet-wide).

    Call it only in the process whose atomic decision made the transition. Adds a
    ``resilience.circuit_breaker.state_change`` event to the call span (``state`` = ``new``,
    ``previous_state`` = ``old``; ``half-open`` is normalised to ``half_open``), counts
    ``resilience.circuit_breaker.transitions`` and sets ``resilience.circuit_breaker.state``.
    """
    st = _state()
    if not st.enabled:
        return
    old, new = _state_name(old), _state_name(new)
    attrs = {
        names.ATTR_CIRCUIT_BREAKER_NAME: breaker,
        names.ATTR_CIRCUIT_BREAKER_STATE: new,
        names.ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE: old,
    }
    inst = st.instruments
    if inst is not None:
        inst.breaker_transitions.add(1, attrs)
        _set_breaker_state(inst.breaker_state, breaker, new)
    rec = record(ctx)
    if rec is not None and rec.span is not None:
        rec.span.add_event(names.EVENT_CIRCUIT_BREAKER_STATE_CHANGE, attrs)


def breaker_call(
    ctx: CallContext | None,
    *,
    breaker: str,
    outcome: BreakerOutcome,
    state: str | None = None,
) -> None:
    """A call passed through a breaker with this outcome.

    Counts ``resilience.circuit_breaker.calls`` (``resilience.circuit_breaker.result`` =
    ``outcome``). ``state``, when given, is the breaker state this process observed for the
    call: it updates the ``resilience.circuit_breaker.state`` gauge and is set on the call
    span with the breaker's name.
    """
    st = _state()
    if not st.enabled:
        return
    inst = st.instruments
    if inst is not None:
        inst.breaker_calls.add(
            1,
            {names.ATTR_CIRCUIT_BREAKER_NAME: breaker, names.ATTR_CIRCUIT_BREAKER_RESULT: outcome},
        )
        if state is not None:
            _set_breaker_state(inst.breaker_state, breaker, _state_name(state))
    if state is not None:
        rec = record(ctx)
        if rec is not None and rec.span is not None:
            rec.span.set_attribute(names.ATTR_CIRCUIT_BREAKER_NAME, breaker)
            rec.span.set_attribute(names.ATTR_CIRCUIT_BREAKER_STATE, _state_name(state))


# -- stores -----------------------------------------------------------------------------------


def store_degraded(*, store: str, degraded: bool, reason: str = "") -> None:
    """A store entered (``degraded=True``) or left degraded mode.

    Sets the ``resilience.store.degraded`` gauge (1 or 0, attribute ``resilience.store.name``
    = ``store``, a short label without credentials) and adds a
    ``resilience.store.state_change`` event to the span current in the task that noticed
    (usually the call whose decision failed). ``reason`` is free text and is not recorded in
    metrics (it would not be low-cardinality).
    """
    st = _state()
    if st.tracer is not None:
        span = _trace.get_current_span()
        if span.is_recording():
            span.add_event(
                names.EVENT_STORE_STATE_CHANGE,
                {names.ATTR_STORE_NAME: store, names.ATTR_STORE_DEGRADED: degraded},
            )
    inst = st.instruments
    if inst is not None:
        inst.store_degraded.set(1 if degraded else 0, {names.ATTR_STORE_NAME: store})


def store_fallback(*, store: str, operation: str, mode: str) -> None:
    """A policy's fallback (``mode``: local / allow / deny) took a decision of ``operation``
    (e.g. ``window_acquire``) because ``store`` was unavailable: counted in
    ``resilience.store.fallback.decisions``."""
    inst = _state().instruments
    if inst is None:
        return
    inst.store_fallback.add(
        1,
        {
            names.ATTR_STORE_NAME: store,
            names.ATTR_STORE_OPERATION: operation,
            names.ATTR_STORE_FALLBACK: mode,
        },
    )
