"""aiohttp integration: classify responses, read the server's wait hints, guard a session.

Needs the ``aiohttp`` extra (``pip install 'resilience[aiohttp]'``); importing
``resilience`` alone never imports aiohttp.

The recommended form retries *outside* aiohttp, so that each attempt is a fresh request::

    from resilience import CircuitBreaker, Pipeline, Retry, SlidingWindowLimiter
    from resilience.aiohttp import raise_for_status

    @Pipeline(Retry(attempts=5, deadline=30), CircuitBreaker(), SlidingWindowLimiter(50, 60))
    async def analyze(session, text):
        async with session.post(URL, json={"text": text},
                                headers={"Idempotency-Key": key_of(text)}) as resp:
            raise_for_status(resp)     # 429/503/... -> RetryableHTTPStatus, response released
            return await resp.json()

For session-wide policies without retries, use :class:`ResilienceMiddleware`.
"""

from __future__ import annotations

from resilience.aiohttp._classify import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    is_idempotent,
    is_retryable,
    is_retryable_status,
    raise_for_status,
    retry_on,
)
from resilience.aiohttp._errors import HTTPStatusError, RetryableHTTPStatus, redact_url
from resilience.aiohttp._middleware import ResilienceMiddleware
from resilience.http import (
    DEFAULT_MAX_RETRY_AFTER,
    HintSource,
    parse_http_date,
    parse_ratelimit,
    parse_retry_after,
    retry_after_hint,
    wait_hint,
)

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "HTTPStatusError",
    "HintSource",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "ResilienceMiddleware",
    "RetryableHTTPStatus",
    "is_idempotent",
    "is_retryable",
    "is_retryable_status",
    "parse_http_date",
    "parse_ratelimit",
    "parse_retry_after",
    "raise_for_status",
    "redact_url",
    "retry_after_hint",
    "retry_on",
    "wait_hint",
]
