"""HTTP without a client: turn an HTTP outcome into a decision.

Pure functions over status codes, headers and error bodies; no HTTP client is imported
(exceptions of httpx, httpx2, aiohttp, openai and anthropic are recognised by duck typing), so
every integration (aiohttp, httpx, the AI SDKs) and every policy can share one set of rules.

- :func:`wait_hint`: how long a response asks us to wait (``retry-after-ms``, ``Retry-After``,
  the OpenAI, Anthropic, IETF and legacy rate-limit fields), with its source for telemetry.
- :func:`rate_limit_state`: the provider's quotas (limit, remaining, reset) from the same fields.
- :func:`outcome_of`: the status, headers, error body and transport failure an exception or a
  response carries, as an :class:`Outcome`.
- :func:`classify`: retryable or not, the wait hint, whose fault (``"caller"`` or
  ``"upstream"``), and whether the request may have been processed (billed), as a
  :class:`Classification`.
- :func:`is_idempotent`: whether a request may be sent again.

See ``docs/http.md`` for the status table and the hint order.
"""

from __future__ import annotations

from resilience.http._classify import (
    BILLING_ERRORS,
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    NOT_PROCESSED_STATUSES,
    RETRYABLE_ERROR_TYPES,
    RETRYABLE_STATUSES,
    Classification,
    Fault,
    classify,
    is_idempotent,
    is_retryable_status,
)
from resilience.http._headers import (
    DEFAULT_MAX_RETRY_AFTER,
    HeadersLike,
    parse_http_date,
    parse_retry_after,
)
from resilience.http._hints import HintSource, WaitHint, retry_after_hint, wait_hint
from resilience.http._outcome import (
    Outcome,
    TransportKind,
    client_retries,
    outcome_of,
    transport_kind,
)
from resilience.http._ratelimit import Quota, RateLimitState, parse_ratelimit, rate_limit_state

__all__ = [
    "BILLING_ERRORS",
    "DEFAULT_MAX_RETRY_AFTER",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENT_METHODS",
    "NOT_PROCESSED_STATUSES",
    "RETRYABLE_ERROR_TYPES",
    "RETRYABLE_STATUSES",
    "Classification",
    "Fault",
    "HeadersLike",
    "HintSource",
    "Outcome",
    "Quota",
    "RateLimitState",
    "TransportKind",
    "WaitHint",
    "classify",
    "client_retries",
    "is_idempotent",
    "is_retryable_status",
    "outcome_of",
    "parse_http_date",
    "parse_ratelimit",
    "parse_retry_after",
    "rate_limit_state",
    "retry_after_hint",
    "transport_kind",
    "wait_hint",
]
