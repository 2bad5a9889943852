"""Every name the library's telemetry emits: spans, events, attributes, metrics and values.

These are the public contract of ``resilience``'s OpenTelemetry output: dashboards and alerts
may rely on them. Our own names live under the ``resilience.`` namespace (no generic semantic
convention exists yet for retries, rate limiters or circuit breakers; semconv issue #2355 may
claim bare ``retry.*`` / ``circuitbreaker.*`` names, so we stay out of them). Where a stable
semantic-convention attribute exists (``error.type``, ``code.function.name``,
``http.request.resend_count``) it is used as is.

``docs/observability.md`` lists every constant of this module; a test keeps the two in sync.
"""

from __future__ import annotations

from typing import Final

#: Instrumentation scope (tracer and meter) name.
SCOPE: Final = "resilience"
#: Semantic-conventions schema the stable attribute names follow.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"

# --- spans -----------------------------------------------------------------------------------
#: The call span is named after the operation itself (``resilience.operation.name``); an
#: attempt span is named ``ATTEMPT_SPAN_PREFIX + operation``.
ATTEMPT_SPAN_PREFIX: Final = "attempt "
#: A hedged attempt (the second, third, ... attempt a ``Hedge`` started) is a span named
#: ``HEDGE_SPAN_PREFIX + operation``, a child of the span current where the ``Hedge`` runs.
HEDGE_SPAN_PREFIX: Final = "hedge "

# --- events (span events; Jaeger shows them as "Logs") ---------------------------------------
EVENT_RETRY_SCHEDULED: Final = "resilience.retry.scheduled"
EVENT_RATE_LIMITER_THROTTLED: Final = "resilience.rate_limiter.throttled"
EVENT_RATE_LIMITER_UPSTREAM_LIMIT: Final = "resilience.rate_limiter.upstream_limit"
EVENT_CIRCUIT_BREAKER_STATE_CHANGE: Final = "resilience.circuit_breaker.state_change"
EVENT_STORE_STATE_CHANGE: Final = "resilience.store.state_change"
EVENT_FALLBACK_TRIGGERED: Final = "resilience.fallback.triggered"
EVENT_FALLBACK_SERVED: Final = "resilience.fallback.served"
EVENT_CONCURRENCY_WAITED: Final = "resilience.concurrency_limit.waited"

# --- attributes ------------------------------------------------------------------------------
ATTR_OPERATION_NAME: Final = "resilience.operation.name"
ATTR_PIPELINE_NAME: Final = "resilience.pipeline.name"
ATTR_OUTCOME: Final = "resilience.outcome"
ATTR_RETRY_NAME: Final = "resilience.retry.name"
ATTR_RETRY_ATTEMPT: Final = "resilience.retry.attempt"
ATTR_RETRY_ATTEMPTS: Final = "resilience.retry.attempts"
ATTR_RETRY_TOTAL_DELAY: Final = "resilience.retry.total_delay"
ATTR_RETRY_DELAY: Final = "resilience.retry.delay"
ATTR_RETRY_DELAY_SOURCE: Final = "resilience.retry.delay_source"
ATTR_RATE_LIMITER_NAME: Final = "resilience.rate_limiter.name"
ATTR_RATE_LIMITER_RESULT: Final = "resilience.rate_limiter.result"
ATTR_RATE_LIMITER_WAIT_TIME: Final = "resilience.rate_limiter.wait_time"
ATTR_RATE_LIMITER_QUOTA: Final = "resilience.rate_limiter.upstream_quota"
ATTR_RATE_LIMITER_LIMIT: Final = "resilience.rate_limiter.limit"
ATTR_RATE_LIMITER_CONFIGURED_LIMIT: Final = "resilience.rate_limiter.configured_limit"
ATTR_CIRCUIT_BREAKER_NAME: Final = "resilience.circuit_breaker.name"
ATTR_CIRCUIT_BREAKER_STATE: Final = "resilience.circuit_breaker.state"
ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE: Final = "resilience.circuit_breaker.previous_state"
ATTR_CIRCUIT_BREAKER_RESULT: Final = "resilience.circuit_breaker.result"
ATTR_STORE_NAME: Final = "resilience.store.name"
ATTR_STORE_DEGRADED: Final = "resilience.store.degraded"
ATTR_STORE_OPERATION: Final = "resilience.store.operation"
ATTR_STORE_FALLBACK: Final = "resilience.store.fallback"
ATTR_FALLBACK_NAME: Final = "resilience.fallback.name"
ATTR_FALLBACK_REASON: Final = "resilience.fallback.reason"
ATTR_FALLBACK_ALTERNATIVE: Final = "resilience.fallback.alternative"
ATTR_FALLBACK_INDEX: Final = "resilience.fallback.index"
ATTR_HEDGE: Final = "resilience.hedge"
ATTR_HEDGE_NAME: Final = "resilience.hedge.name"
ATTR_HEDGE_NUMBER: Final = "resilience.hedge.number"
ATTR_HEDGE_WINNER: Final = "resilience.hedge.winner"
ATTR_HEDGES: Final = "resilience.hedge.started"
ATTR_CONCURRENCY_NAME: Final = "resilience.concurrency_limit.name"
ATTR_CONCURRENCY_RESULT: Final = "resilience.concurrency_limit.result"
ATTR_CONCURRENCY_WAIT_TIME: Final = "resilience.concurrency_limit.wait_time"
#: Stable semconv attributes we reuse.
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_CODE_FUNCTION_NAME: Final = "code.function.name"
ATTR_HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"

# --- metrics (durations in seconds) ----------------------------------------------------------
METRIC_CALL_DURATION: Final = "resilience.call.duration"
METRIC_RETRY_ATTEMPT_DURATION: Final = "resilience.retry.attempt.duration"
METRIC_RETRIES: Final = "resilience.retries"
METRIC_RETRY_DELAY: Final = "resilience.retry.delay"
METRIC_RATE_LIMITER_REQUESTS: Final = "resilience.rate_limiter.requests"
METRIC_RATE_LIMITER_ACQUIRE_DURATION: Final = "resilience.rate_limiter.acquire.duration"
METRIC_RATE_LIMITER_LIMIT: Final = "resilience.rate_limiter.limit"
METRIC_CIRCUIT_BREAKER_STATE: Final = "resilience.circuit_breaker.state"
METRIC_CIRCUIT_BREAKER_TRANSITIONS: Final = "resilience.circuit_breaker.transitions"
METRIC_CIRCUIT_BREAKER_CALLS: Final = "resilience.circuit_breaker.calls"
METRIC_STORE_DEGRADED: Final = "resilience.store.degraded"
METRIC_STORE_FALLBACK_DECISIONS: Final = "resilience.store.fallback.decisions"
METRIC_FALLBACKS: Final = "resilience.fallbacks"
METRIC_HEDGES: Final = "resilience.hedges"
METRIC_CONCURRENCY_IN_FLIGHT: Final = "resilience.concurrency_limit.in_flight"
METRIC_CONCURRENCY_WAITING: Final = "resilience.concurrency_limit.waiting"
METRIC_CONCURRENCY_WAIT_DURATION: Final = "resilience.concurrency_limit.wait.duration"

# --- attribute values ------------------------------------------------------------------------
#: ``resilience.outcome`` of a call.
OUTCOME_SUCCESS: Final = "success"
OUTCOME_FAILURE: Final = "failure"  # an error escaped and no retrier gave up on it
OUTCOME_NON_RETRYABLE: Final = "non_retryable"
OUTCOME_EXHAUSTED: Final = "exhausted"
OUTCOME_DEADLINE_EXCEEDED: Final = "deadline_exceeded"
OUTCOME_BUDGET_EXHAUSTED: Final = "budget_exhausted"
OUTCOME_CIRCUIT_OPEN: Final = "circuit_open"
OUTCOME_RATE_LIMITED: Final = "rate_limited"
OUTCOME_CANCELLED: Final = "cancelled"

#: ``resilience.retry.delay_source``.
DELAY_SOURCE_BACKOFF: Final = "backoff"
DELAY_SOURCE_RETRY_AFTER: Final = "retry_after"
DELAY_SOURCE_RATE_LIMIT_HEADER: Final = "rate_limit_header"

#: ``resilience.rate_limiter.result``.
LIMITER_RESULT_ACQUIRED: Final = "acquired"
LIMITER_RESULT_REJECTED: Final = "rejected"

#: ``resilience.concurrency_limit.result``.
CONCURRENCY_RESULT_ACQUIRED: Final = "acquired"
CONCURRENCY_RESULT_REJECTED: Final = "rejected"

#: ``resilience.fallback.reason``: why a ``Fallback`` moved on to its next alternative.
FALLBACK_REASON_CIRCUIT_OPEN: Final = "circuit_open"
FALLBACK_REASON_RATE_LIMITED: Final = "rate_limited"
FALLBACK_REASON_UPSTREAM_FAULT: Final = "upstream_fault"
FALLBACK_REASON_ERROR: Final = "error"  # an exception matched only by an explicit ``on=``
FALLBACK_REASON_RESULT: Final = "result"  # a returned value flagged by ``on_result``

#: ``resilience.circuit_breaker.state`` / ``.previous_state``.
BREAKER_STATE_CLOSED: Final = "closed"
BREAKER_STATE_OPEN: Final = "open"
BREAKER_STATE_HALF_OPEN: Final = "half_open"

#: ``resilience.circuit_breaker.result``.
BREAKER_RESULT_SUCCESS: Final = "success"
BREAKER_RESULT_FAILURE: Final = "failure"
BREAKER_RESULT_IGNORED: Final = "ignored"
BREAKER_RESULT_REJECTED: Final = "rejected"

#: ``error.type`` values of the library's own rejections (other values: the exception's
#: module-qualified class name, builtins bare, or an HTTP status string such as ``"503"``).
ERROR_TYPE_CIRCUIT_OPEN: Final = "resilience.CircuitOpen"
ERROR_TYPE_RATE_LIMITED: Final = "resilience.RateLimited"
ERROR_TYPE_STORE_UNAVAILABLE: Final = "resilience.StoreUnavailable"
