"""The metric instruments of the library, created once per resolved meter.

:class:`Instruments` holds every histogram, counter and gauge the library records into (names in
:mod:`resilience.telemetry.names`, documented in ``docs/observability.md``). It exists only
while a meter that records is installed: :mod:`resilience.telemetry._provider` creates it when
it resolves a recording meter and keeps ``None`` otherwise, so the emitters test one attribute
(``st.instruments is not None``) before they record anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilience.telemetry import names

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter

__all__ = ["Instruments"]

# Bucket advisories (seconds): HTTP's advisory, extended for whole calls; research §6.5.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
CALL_BUCKETS = (*ATTEMPT_BUCKETS, 30, 60)
DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Instruments:
    """Every instrument the library records into, created from one meter."""

    __slots__ = (
        "acquire_duration",
        "attempt_duration",
        "breaker_calls",
        "breaker_state",
        "breaker_transitions",
        "call_duration",
        "fallbacks",
        "hedges",
        "limiter_requests",
        "meter",
        "retries",
        "retry_delay",
        "store_degraded",
        "store_fallback",
    )

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.call_duration: Histogram = meter.create_histogram(
            names.METRIC_CALL_DURATION,
            unit="s",
            description="Duration of pipeline calls, all attempts, waits and backoff included.",
            explicit_bucket_boundaries_advisory=CALL_BUCKETS,
        )
        self.attempt_duration: Histogram = meter.create_histogram(
            names.METRIC_RETRY_ATTEMPT_DURATION,
            unit="s",
            description="Duration of each attempt of a pipeline call.",
            explicit_bucket_boundaries_advisory=ATTEMPT_BUCKETS,
        )
        self.retries: Counter = meter.create_counter(
            names.METRIC_RETRIES, unit="{retry}", description="Retries scheduled."
        )
        self.retry_delay: Histogram = meter.create_histogram(
            names.METRIC_RETRY_DELAY,
            unit="s",
            description="Delay chosen before each retry.",
            explicit_bucket_boundaries_advisory=DELAY_BUCKETS,
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
            explicit_bucket_boundaries_advisory=CALL_BUCKETS,
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
        self.fallbacks: Counter = meter.create_counter(
            names.METRIC_FALLBACKS,
            unit="{fallback}",
            description="Calls a Fallback moved on to its next alternative, by reason.",
        )
        self.hedges: Counter = meter.create_counter(
            names.METRIC_HEDGES,
            unit="{attempt}",
            description="Hedged attempts a Hedge started (the extra requests), by outcome.",
        )
