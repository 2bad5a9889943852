"""What ``Fallback`` and ``Hedge`` report: serving a call from somewhere else.

- :func:`fallback_triggered`: a ``Fallback`` moves on to its next alternative (an event on the
  call span, the ``resilience.fallbacks`` counter by reason);
- :func:`fallback_served`: an alternative served the call (an attribute and an event on the
  call span);
- :func:`instrument_hedge`: one hedged attempt, as a child span marked as a hedge (counted in
  ``resilience.hedges`` by outcome);
- :func:`hedge_settled`: which attempt won, and how many hedges the call started (attributes
  of the call span).

With telemetry disabled each returns after the cached check (:func:`instrument_hedge`: after
it, ``return await call()``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry import context as _otel_context
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from resilience._context import CallContext
from resilience.telemetry import names
from resilience.telemetry._outcomes import error_type
from resilience.telemetry._provider import State, state
from resilience.telemetry._spans import record

__all__ = ["fallback_served", "fallback_triggered", "hedge_settled", "instrument_hedge"]

T = TypeVar("T")


def fallback_triggered(
    ctx: CallContext | None,
    *,
    policy: str,
    reason: str,
    error: BaseException | None,
    alternative: str,
    index: int,
) -> None:
    """A ``Fallback`` named ``policy`` runs its alternative number ``index`` (1-based, named
    ``alternative``) because of ``reason`` (``names.FALLBACK_REASON_*``; ``error`` is the
    failure, ``None`` for a flagged result).

    Adds a ``resilience.fallback.triggered`` event to the call span and counts
    ``resilience.fallbacks`` (``resilience.fallback.name``, ``resilience.fallback.reason``,
    ``resilience.operation.name``, ``error.type`` when an exception triggered it).
    """
    st = _state_if_enabled()
    if st is None:
        return
    etype = error_type(error) if error is not None else None
    attrs: dict[str, Any] = {
        names.ATTR_FALLBACK_NAME: policy,
        names.ATTR_FALLBACK_REASON: reason,
    }
    if etype is not None:
        attrs[names.ATTR_ERROR_TYPE] = etype
    rec = record(ctx)
    if rec is not None and rec.span is not None:
        event = dict(attrs)
        event[names.ATTR_FALLBACK_ALTERNATIVE] = alternative
        event[names.ATTR_FALLBACK_INDEX] = index
        rec.span.add_event(names.EVENT_FALLBACK_TRIGGERED, event)
    inst = st.instruments
    if inst is not None:
        if ctx is not None:
            attrs[names.ATTR_OPERATION_NAME] = ctx.operation
        inst.fallbacks.add(1, attrs)


def fallback_served(ctx: CallContext | None, *, policy: str, alternative: str, index: int) -> None:
    """The alternative number ``index`` (1-based), named ``alternative``, of the ``Fallback``
    named ``policy`` returned: sets ``resilience.fallback.alternative`` and
    ``resilience.fallback.index`` on the call span and adds a ``resilience.fallback.served``
    event there."""
    st = _state_if_enabled()
    if st is None:
        return
    rec = record(ctx)
    if rec is None or rec.span is None:
        return
    attrs: dict[str, Any] = {
        names.ATTR_FALLBACK_NAME: policy,
        names.ATTR_FALLBACK_ALTERNATIVE: alternative,
        names.ATTR_FALLBACK_INDEX: index,
    }
    rec.span.set_attributes(attrs)
    rec.span.add_event(names.EVENT_FALLBACK_SERVED, attrs)


def hedge_settled(ctx: CallContext | None, *, policy: str, winner: int, started: int) -> None:
    """The race of a hedged call ended: attempt ``winner`` won (0 = the first attempt, ``-1``
    = none did) after ``started`` hedges. Sets ``resilience.hedge.name``,
    ``resilience.hedge.winner`` (when one won) and ``resilience.hedge.started`` on the call
    span."""
    st = _state_if_enabled()
    if st is None:
        return
    rec = record(ctx)
    if rec is None or rec.span is None:
        return
    attrs: dict[str, Any] = {names.ATTR_HEDGE_NAME: policy, names.ATTR_HEDGES: started}
    if winner >= 0:
        attrs[names.ATTR_HEDGE_WINNER] = winner
    rec.span.set_attributes(attrs)


async def instrument_hedge(
    call: Callable[[], Awaitable[T]], ctx: CallContext, *, policy: str, number: int
) -> T:
    """Run hedged attempt ``number`` (1-based: the first hedge is 1) inside its own span.

    The span is INTERNAL, named ``hedge <operation>``, a child of the span current where it
    starts (the attempt span, else the call span), with ``resilience.hedge`` = true,
    ``resilience.hedge.name``, ``resilience.hedge.number``, ``resilience.operation.name``, and
    at its end ``resilience.outcome``: ``success``, ``failure`` (status ``ERROR`` and
    ``error.type``) or ``cancelled`` (it lost the race: no error). Counts
    ``resilience.hedges`` with ``resilience.hedge.name``, ``resilience.operation.name`` and
    ``resilience.outcome``.
    """
    st = state()
    if not st.enabled:
        return await call()
    return await _traced_hedge(st, call, ctx, policy, number)


async def _traced_hedge(
    st: State, call: Callable[[], Awaitable[T]], ctx: CallContext, policy: str, number: int
) -> T:
    op = ctx.operation
    span = token = None
    if st.tracer is not None:
        span = st.tracer.start_span(
            names.HEDGE_SPAN_PREFIX + op,
            kind=SpanKind.INTERNAL,
            attributes={
                names.ATTR_OPERATION_NAME: op,
                names.ATTR_HEDGE: True,
                names.ATTR_HEDGE_NAME: policy,
                names.ATTR_HEDGE_NUMBER: number,
            },
            record_exception=False,
            set_status_on_exception=False,
        )
        token = _otel_context.attach(_trace.set_span_in_context(span))
    outcome = names.OUTCOME_SUCCESS
    try:
        return await call()
    except Exception as exc:
        outcome = names.OUTCOME_FAILURE
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
            span.set_attribute(names.ATTR_ERROR_TYPE, error_type(exc))
        raise
    except BaseException:
        outcome = names.OUTCOME_CANCELLED
        raise
    finally:
        if span is not None:
            _otel_context.detach(token)  # type: ignore[arg-type]
            span.set_attribute(names.ATTR_OUTCOME, outcome)
            span.end()
        inst = st.instruments
        if inst is not None:
            inst.hedges.add(
                1,
                {
                    names.ATTR_HEDGE_NAME: policy,
                    names.ATTR_OPERATION_NAME: op,
                    names.ATTR_OUTCOME: outcome,
                },
            )


def _state_if_enabled() -> State | None:
    st = state()
    return st if st.enabled else None
