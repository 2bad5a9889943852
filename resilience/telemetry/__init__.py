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

**Layout.** The public surface is this package's namespace; the parts are private modules:

- ``_provider``: which tracer and meter to use, resolved once and cached (:func:`configure`,
  :func:`enabled`);
- ``_instruments``: the metric instruments, created once per recording meter;
- ``_spans``: the call and attempt spans (:func:`instrument_call`, :func:`instrument_attempt`);
- ``_events``: the events policies and stores report (``retry_*``, ``limiter_*``,
  ``breaker_*``, ``store_*``);
- ``_outcomes``: ``error.type`` and the call's ``resilience.outcome``;
- ``_alternatives``: what ``Fallback`` and ``Hedge`` report (``fallback_*``, the hedge spans);
- ``_concurrency``: what ``ConcurrencyLimit`` reports (``concurrency_*``).

Public submodules: :mod:`~resilience.telemetry.names` (every emitted name),
:mod:`~resilience.telemetry.aiohttp` (the aiohttp client request hook) and
:mod:`~resilience.telemetry.setup` (SDK set-up for applications, needs the ``otel`` extra).

This package is a leaf of the library: it imports nothing from ``resilience`` but
:mod:`resilience._context` (:class:`~resilience.CallContext`, :class:`GiveUpReason`) and
:mod:`resilience.errors` (``tests/test_telemetry_layering.py`` enforces it).
"""

from __future__ import annotations

from resilience._context import GiveUpReason
from resilience.telemetry import names as names  # the public submodule, as an attribute
from resilience.telemetry._alternatives import (
    fallback_served,
    fallback_triggered,
    hedge_settled,
    instrument_hedge,
)
from resilience.telemetry._concurrency import (
    concurrency_decision,
    concurrency_in_flight,
    concurrency_waiting,
)
from resilience.telemetry._events import (
    BreakerOutcome,
    DelaySource,
    LimiterResult,
    breaker_call,
    breaker_state_change,
    limiter_decision,
    limiter_upstream_limit,
    retry_exhausted,
    retry_scheduled,
    store_degraded,
    store_fallback,
)
from resilience.telemetry._outcomes import error_type
from resilience.telemetry._provider import configure, enabled
from resilience.telemetry._spans import (
    call_span,
    current_attempt,
    instrument_attempt,
    instrument_call,
)

__all__ = [
    "BreakerOutcome",
    "DelaySource",
    "GiveUpReason",
    "LimiterResult",
    "breaker_call",
    "breaker_state_change",
    "call_span",
    "concurrency_decision",
    "concurrency_in_flight",
    "concurrency_waiting",
    "configure",
    "current_attempt",
    "enabled",
    "error_type",
    "fallback_served",
    "fallback_triggered",
    "hedge_settled",
    "instrument_attempt",
    "instrument_call",
    "instrument_hedge",
    "limiter_decision",
    "limiter_upstream_limit",
    "retry_exhausted",
    "retry_scheduled",
    "store_degraded",
    "store_fallback",
]
