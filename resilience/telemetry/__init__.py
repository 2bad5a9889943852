"""Telemetry: every span, event and metric the library emits goes through this package.

Policies call the functions below at fixed points; nothing else in the library touches
OpenTelemetry. The library depends on ``opentelemetry-api`` only and never configures the SDK:
it gets its tracer and meter (scope ``"resilience"``, the package version, semconv schema
1.44.0) from the providers given to :func:`configure`, or else from the global providers the
application installed.

What is emitted (names in :mod:`resilience.telemetry.names`, explained in
``docs/observability.md``):

- one INTERNAL **call span** per pipeline call, named after the operation, and one INTERNAL
  **attempt span** per attempt (``attempt <operation>``, ``resilience.retry.attempt`` 1-based)
  as its child. A call that succeeds after retries leaves its status unset; a cancelled call
  is not an error. A failed attempt span gets status ``ERROR`` and ``error.type``;
- span events ``resilience.retry.scheduled``, ``resilience.rate_limiter.throttled`` and
  ``resilience.circuit_breaker.state_change`` on our own spans, never on "whatever is current";
- metrics with durations in seconds and low-cardinality attributes only (never a key or URL).

**Cost when absent.** With no SDK installed (the global providers are still the API's proxies
without a delegate, or no-op providers were given), :func:`instrument_call` and
:func:`instrument_attempt` just ``return await call()`` after one cached check (two identity
comparisons), and the event functions return at once. The decision is cached and recomputed
when :func:`configure` is called or when the application installs a global provider
(``opentelemetry.trace.set_tracer_provider`` / ``opentelemetry.metrics.set_meter_provider``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from opentelemetry import context as _otel_context
from opentelemetry import metrics as _metrics
from opentelemetry import trace as _trace
from opentelemetry.trace import NoOpTracer, ProxyTracer, SpanKind, Status, StatusCode

from resilience.errors import CircuitOpen, RateLimited
from resilience.telemetry import names

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from resilience.pipeline import CallContext

__all__ = [
    "BreakerOutcome",
    "DelaySource",
    "LimiterResult",
    "breaker_call",
    "breaker_state_change",
    "call_span",
    "configure",
    "current_attempt",
    "enabled",
    "error_type",
    "instrument_attempt",
    "instrument_call",
    "limiter_decision",
    "retry_exhausted",
    "retry_scheduled",
    "store_degraded",
    "store_fallback",
]

T = TypeVar("T")

LimiterResult = Literal["admitted", "waited", "rejected"]
BreakerOutcome = Literal["success", "failure", "rejected", "ignored"]
DelaySource = Literal["backoff", "retry_after", "rate_limit_header"]

# Bucket advisories (seconds): HTTP's advisory, extended for whole calls; research §6.5.
_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_CALL_BUCKETS = (*_ATTEMPT_BUCKETS, 30, 60)
_DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BREAKER_STATES = (
    names.BREAKER_STATE_CLOSED,
    names.BREAKER_STATE_OPEN,
    names.BREAKER_STATE_HALF_OPEN,
)

#: The attempt in progress in this task (1-based; 0 outside any attempt). Set by
#: :func:`instrument_attempt` while telemetry is enabled; read by the aiohttp request hook.
_ATTEMPT: ContextVar[int] = ContextVar("resilience_attempt", default=0)

# ------------------------------------------------------------------------------------------
# Provider resolution, cached.
# ------------------------------------------------------------------------------------------

_CONFIG_TP: TracerProvider | None = None
_CONFIG_MP: MeterProvider | None = None
_UNSET: Any = object()  # never the value of a provider global: forces a resolution


class _State:
    """The resolved telemetry of the process: tracer and instruments, or nothing."""

    __slots__ = (
        "acquire_duration",
        "attempt_duration",
        "breaker_calls",
        "breaker_state",
        "breaker_transitions",
        "call_duration",
        "enabled",
        "limiter_requests",
        "meter",
        "mp_seen",
        "retries",
        "retry_delay",
        "store_degraded",
        "store_fallback",
        "tp_seen",
        "tracer",
    )

    def __init__(self, tp_seen: Any, mp_seen: Any) -> None:
        self.tp_seen = tp_seen
        self.mp_seen = mp_seen
        self.tracer: Tracer | None = None
        self.meter: Meter | None = None
        self.enabled = False

    def make_instruments(self, meter: Meter) -> None:
        self.meter = meter
        self.call_duration: Histogram = meter.create_histogram(
            names.METRIC_CALL_DURATION,
            unit="s",
            description="Duration of pipeline calls, all attempts, waits and backoff included.",
            explicit_bucket_boundaries_advisory=_CALL_BUCKETS,
        )
        self.attempt_duration: Histogram = meter.create_histogram(
            names.METRIC_RETRY_ATTEMPT_DURATION,
            unit="s",
            description="Duration of each attempt of a pipeline call.",
            explicit_bucket_boundaries_advisory=_ATTEMPT_BUCKETS,
        )
        self.retries: Counter = meter.create_counter(
            names.METRIC_RETRIES, unit="{retry}", description="Retries scheduled."
        )
        self.retry_delay: Histogram = meter.create_histogram(
            names.METRIC_RETRY_DELAY,
            unit="s",
            description="Delay chosen before each retry.",
            explicit_bucket_boundaries_advisory=_DELAY_BUCKETS,
        )
        self.limiter_requests: Counter = meter.create_counter(
            names.METRIC_RATE_LIMITER_REQUESTS,
            unit="{request}",
            description="Rate limiter decisions, by result.",
        )
        self.acquire_duration: Histogram = meter.create_histogram(
            names.METRIC_RATE_LIMITER_ACQUIRE_DURATION,
            unit="s",
            description="Time spent acquiring a rate limiter permit (round trip and wait).",
            explicit_bucket_boundaries_advisory=_CALL_BUCKETS,
        )
        self.breaker_state: Any = meter.create_gauge(
            names.METRIC_CIRCUIT_BREAKER_STATE,
            unit="1",
            description="1 for the breaker state last observed by this process, 0 for others.",
        )
        self.breaker_transitions: Counter = meter.create_counter(
            names.METRIC_CIRCUIT_BREAKER_TRANSITIONS,
            unit="{transition}",
            description="Breaker transitions performed by this process.",
        )
        self.breaker_calls: Counter = meter.create_counter(
            names.METRIC_CIRCUIT_BREAKER_CALLS,
            unit="{call}",
            description="Calls through a circuit breaker, by result.",
        )
        self.store_degraded: Any = meter.create_gauge(
            names.METRIC_STORE_DEGRADED,
            unit="1",
            description="1 while a store runs in degraded mode (its fallback policy), else 0.",
        )
        self.store_fallback: Counter = meter.create_counter(
            names.METRIC_STORE_FALLBACK_DECISIONS,
            unit="{decision}",
            description="Decisions taken by a policy's fallback while its store was unavailable.",
        )


_STATE = _State(_UNSET, _UNSET)

# Private names of opentelemetry-api. Each use has a public fallback, taken when a name is
# missing (a future API version may rename or remove it), at import or later:
#
# - ``opentelemetry.trace._TRACER_PROVIDER`` and ``opentelemetry.metrics._internal.
#   _METER_PROVIDER``, the globals behind ``set_tracer_provider`` / ``set_meter_provider``:
#   reading them is the cheapest exact test of "has the application installed a provider since
#   we last looked". Fallback: the public getters ``get_tracer_provider()`` /
#   ``get_meter_provider()`` (a little slower per call).
# - ``opentelemetry.metrics._internal._ProxyMeter``, the meter the API hands out before any
#   provider is installed (it records nothing until then). Fallback: a meter whose class is
#   defined by the API's own ``opentelemetry.metrics`` package (its no-op or proxy meter)
#   records nothing; an SDK's meter is defined elsewhere.
try:
    from opentelemetry.metrics import _internal as _metrics_internal
except ImportError:  # pragma: no cover - depends on the installed opentelemetry-api
    _metrics_internal = None  # type: ignore[assignment]


def _has_private_globals() -> bool:
    return hasattr(_trace, "_TRACER_PROVIDER") and hasattr(_metrics_internal, "_METER_PROVIDER")


def _seen_public() -> tuple[Any, Any]:
    return _trace.get_tracer_provider(), _metrics.get_meter_provider()


def _seen_private() -> tuple[Any, Any]:
    try:
        return _trace._TRACER_PROVIDER, _metrics_internal._METER_PROVIDER
    except AttributeError:
        _select(private=False)
        return _seen_public()


def _state_public() -> _State:
    st = _STATE
    if st.tp_seen is _trace.get_tracer_provider() and st.mp_seen is _metrics.get_meter_provider():
        return st
    return _resolve()


def _state_private() -> _State:
    st = _STATE
    try:
        if (
            st.tp_seen is _trace._TRACER_PROVIDER
            and st.mp_seen is _metrics_internal._METER_PROVIDER
        ):
            return st
    except AttributeError:  # the private globals are gone: the public getters from now on
        _select(private=False)
        return _state_public()
    return _resolve()


#: The cached state, checked against the provider globals (private or public way).
_state: Callable[[], _State] = _state_private
#: The values :func:`_state` compares with, read the same way.
_globals_seen: Callable[[], tuple[Any, Any]] = _seen_private


def _select(private: bool | None = None) -> None:
    """Read the provider globals the private way (when present) or through the public getters."""
    global _state, _globals_seen
    if private is None:
        private = _has_private_globals()
    if private:
        _state, _globals_seen = _state_private, _seen_private
    else:
        _state, _globals_seen = _state_public, _seen_public


_select()


def _records_nothing(meter: Meter) -> bool:
    """Whether ``meter`` is the API's own no-op or proxy meter (no SDK behind it)."""
    if isinstance(meter, _metrics.NoOpMeter):
        return True
    proxy = getattr(_metrics_internal, "_ProxyMeter", None)
    if isinstance(proxy, type) and isinstance(meter, proxy):
        return True
    module = type(meter).__module__
    return module == "opentelemetry.metrics" or module.startswith("opentelemetry.metrics.")


def _version() -> str:
    import resilience

    return str(getattr(resilience, "__version__", ""))


def _resolve() -> _State:
    global _STATE
    version = _version()
    # The public getters also load a provider named by OTEL_PYTHON_TRACER_PROVIDER /
    # OTEL_PYTHON_METER_PROVIDER, which sets the globals: read what we compare afterwards.
    tp = _CONFIG_TP if _CONFIG_TP is not None else _trace.get_tracer_provider()
    mp = _CONFIG_MP if _CONFIG_MP is not None else _metrics.get_meter_provider()
    st = _State(*_globals_seen())
    tracer = tp.get_tracer(names.SCOPE, version, names.SCHEMA_URL)
    # A ProxyTracer is what the API hands out before any provider is installed: a no-op
    # until then (we resolve again when the global changes). NoOpTracer: SDK disabled.
    if not isinstance(tracer, (ProxyTracer, NoOpTracer)):
        st.tracer = tracer
    meter = mp.get_meter(names.SCOPE, version, names.SCHEMA_URL)
    if not _records_nothing(meter):
        st.make_instruments(meter)
    st.enabled = st.tracer is not None or st.meter is not None
    _STATE = st
    return st


def configure(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Use these providers for the library's spans and metrics (``None``: the global ones).

    The library never configures the OpenTelemetry SDK; by default it follows the providers
    the application installed globally (``opentelemetry.trace.set_tracer_provider``), picking
    up a provider installed later automatically. Call this to inject providers instead (tests,
    or an application that keeps several), or with no arguments to go back to the globals.
    Takes effect for calls that start afterwards.
    """
    global _CONFIG_TP, _CONFIG_MP, _STATE
    _CONFIG_TP = tracer_provider
    _CONFIG_MP = meter_provider
    _select()
    _STATE = _State(_UNSET, _UNSET)


def enabled() -> bool:
    """Whether any telemetry is recorded now (a tracer or a meter provider is installed)."""
    return _state().enabled


def current_attempt() -> int:
    """The 1-based number of the attempt running in this task, or 0 outside any attempt.

    Only tracked while telemetry is enabled (see :func:`enabled`).
    """
    return _ATTEMPT.get()


# ------------------------------------------------------------------------------------------
# Error types and outcomes.
# ------------------------------------------------------------------------------------------


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value the library reports for ``exc`` (low cardinality).

    - an exception with an ``int`` attribute ``status`` between 400 and 599 (an HTTP error,
      e.g. ``aiohttp.ClientResponseError``): that status as a string, e.g. ``"503"``;
    - the library's own exceptions: their public name, e.g. ``"resilience.CircuitOpen"``;
    - builtins: the bare class name, e.g. ``"TimeoutError"``;
    - anything else: the module-qualified class name, e.g.
      ``"aiohttp.client_exceptions.ServerDisconnectedError"``.
    """
    status = getattr(exc, "status", None)
    if type(status) is int and 400 <= status <= 599:
        return str(status)
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module == "resilience.errors":
        return "resilience." + cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _outcome(exc: BaseException, rec: _CallRecord) -> str:
    if isinstance(exc, CircuitOpen):
        return names.OUTCOME_CIRCUIT_OPEN
    if isinstance(exc, RateLimited):
        return names.OUTCOME_RATE_LIMITED
    reason = rec.gave_up
    if reason is None:
        return names.OUTCOME_FAILURE
    r = reason.lower()
    if "deadline" in r:
        return names.OUTCOME_DEADLINE_EXCEEDED
    if "budget" in r:
        return names.OUTCOME_BUDGET_EXHAUSTED
    if "circuit" in r:
        return names.OUTCOME_CIRCUIT_OPEN
    if ("not" in r or "non" in r) and "retr" in r:
        return names.OUTCOME_NON_RETRYABLE
    return names.OUTCOME_EXHAUSTED


def _state_name(state: str) -> str:
    return state.lower().replace("-", "_")


# ------------------------------------------------------------------------------------------
# Calls and attempts.
# ------------------------------------------------------------------------------------------


class _CallRecord:
    """What telemetry keeps about one call while it runs (stored in ``ctx.span``)."""

    __slots__ = ("attempt_span", "attempts", "gave_up", "pipeline", "span", "total_delay")

    def __init__(self) -> None:
        self.span: Span | None = None
        self.attempt_span: Span | None = None
        self.attempts = 0
        self.total_delay = 0.0
        self.gave_up: str | None = None
        self.pipeline: str | None = None


def _record(ctx: CallContext | None) -> _CallRecord | None:
    if ctx is None:
        return None
    rec = ctx.span
    return rec if isinstance(rec, _CallRecord) else None


def call_span(ctx: CallContext) -> Span | None:
    """The OpenTelemetry span of a running call (``None`` when not traced).

    Handy to read the trace id, e.g. ``format(call_span(ctx).get_span_context().trace_id,
    "032x")``.
    """
    rec = _record(ctx)
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
    st = _state()
    if not st.enabled:
        return await call()
    return await _traced_call(st, call, ctx, function, pipeline)


async def _traced_call(
    st: _State,
    call: Callable[[], Awaitable[T]],
    ctx: CallContext,
    function: str | None,
    pipeline: str | None,
) -> T:
    op = ctx.operation
    rec = _CallRecord()
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
        outcome = _outcome(exc, rec)
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
        if st.meter is not None:
            mattrs: dict[str, Any] = {names.ATTR_OPERATION_NAME: op, names.ATTR_OUTCOME: outcome}
            if pipeline:
                mattrs[names.ATTR_PIPELINE_NAME] = pipeline
            if etype is not None:
                mattrs[names.ATTR_ERROR_TYPE] = etype
            st.call_duration.record(elapsed, mattrs)


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
    st = _state()
    if not st.enabled:
        return await call()
    return await _traced_attempt(st, call, ctx)


async def _traced_attempt(st: _State, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    n = ctx.attempt if ctx.attempt > 0 else 1
    op = ctx.operation
    rec = _record(ctx)
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
    attempt_token = _ATTEMPT.set(n)
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
        _ATTEMPT.reset(attempt_token)
        if span is not None:
            _otel_context.detach(token)  # type: ignore[arg-type]
            if rec is not None and rec.attempt_span is span:
                rec.attempt_span = None
            span.end()
        if st.meter is not None:
            mattrs: dict[str, Any] = {
                names.ATTR_OPERATION_NAME: op,
                names.ATTR_RETRY_ATTEMPT: n,
            }
            if rec is not None and rec.pipeline:
                mattrs[names.ATTR_PIPELINE_NAME] = rec.pipeline
            if etype is not None:
                mattrs[names.ATTR_ERROR_TYPE] = etype
            st.attempt_duration.record(elapsed, mattrs)


# ------------------------------------------------------------------------------------------
# Events reported by policies.
# ------------------------------------------------------------------------------------------


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
    rec = _record(ctx)
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
    if st.meter is not None:
        mattrs: dict[str, Any] = {names.ATTR_RETRY_DELAY_SOURCE: source}
        if ctx is not None:
            mattrs[names.ATTR_OPERATION_NAME] = ctx.operation
        # A fresh dict for each instrument: SDKs before 1.3x keep the mapping they are given.
        st.retry_delay.record(delay, dict(mattrs))
        if rec is not None and rec.pipeline:
            mattrs[names.ATTR_PIPELINE_NAME] = rec.pipeline
        if etype is not None:
            mattrs[names.ATTR_ERROR_TYPE] = etype
        st.retries.add(1, mattrs)


def retry_exhausted(ctx: CallContext | None, *, policy: str, attempts: int, reason: str) -> None:
    """The retrier gave up (attempts, deadline, budget or a non-retryable error).

    Sets the call's ``resilience.outcome`` when the error escapes: a ``reason`` mentioning
    ``deadline`` gives ``deadline_exceeded``, ``budget`` gives ``budget_exhausted``,
    ``circuit`` gives ``circuit_open``, ``not_retryable`` (or ``non_retryable``) gives
    ``non_retryable``, anything else (``attempts``) ``exhausted``.
    """
    rec = _record(ctx)
    if rec is not None:
        rec.gave_up = reason
        if attempts > rec.attempts:
            rec.attempts = attempts


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
    if st.meter is not None:
        mattrs = {names.ATTR_RATE_LIMITER_NAME: limiter, names.ATTR_RATE_LIMITER_RESULT: res}
        st.limiter_requests.add(1, mattrs)
        st.acquire_duration.record(duration, mattrs)
    if result != "admitted":
        rec = _record(ctx)
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


def _set_breaker_state(st: _State, breaker: str, state: str) -> None:
    for s in _BREAKER_STATES:
        st.breaker_state.set(
            1 if s == state else 0,
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
    if st.meter is not None:
        st.breaker_transitions.add(1, attrs)
        _set_breaker_state(st, breaker, new)
    rec = _record(ctx)
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
    if st.meter is not None:
        st.breaker_calls.add(
            1,
            {names.ATTR_CIRCUIT_BREAKER_NAME: breaker, names.ATTR_CIRCUIT_BREAKER_RESULT: outcome},
        )
        if state is not None:
            _set_breaker_state(st, breaker, _state_name(state))
    if state is not None:
        rec = _record(ctx)
        if rec is not None and rec.span is not None:
            rec.span.set_attribute(names.ATTR_CIRCUIT_BREAKER_NAME, breaker)
            rec.span.set_attribute(names.ATTR_CIRCUIT_BREAKER_STATE, _state_name(state))


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
    if st.meter is None:
        return
    st.store_degraded.set(1 if degraded else 0, {names.ATTR_STORE_NAME: store})


def store_fallback(*, store: str, operation: str, mode: str) -> None:
    """A policy's fallback (``mode``: local / allow / deny) took a decision of ``operation``
    (e.g. ``window_acquire``) because ``store`` was unavailable: counted in
    ``resilience.store.fallback.decisions``."""
    st = _state()
    if st.meter is None:
        return
    st.store_fallback.add(
        1,
        {
            names.ATTR_STORE_NAME: store,
            names.ATTR_STORE_OPERATION: operation,
            names.ATTR_STORE_FALLBACK: mode,
        },
    )
