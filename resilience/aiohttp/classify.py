"""Which HTTP outcomes are worth retrying, and the helper that turns a response into an error.

Rules (RFC 9110 §9.2.2, urllib3's defaults, gRPC A6, Stripe's ``Idempotency-Key``):

- **Statuses.** 429, 408, 502, 503 and 504 are retryable (:data:`RETRYABLE_STATUSES`); every
  other status ≥ 400 fails fast (a 400 or 404 will not get better by asking again; a 500 is
  usually a bug, not an outage).
- **Methods.** GET, HEAD, OPTIONS, TRACE, PUT and DELETE are idempotent
  (:data:`IDEMPOTENT_METHODS`). A POST or PATCH that got a 5xx or a timeout *may have been
  executed*, so it is retried only when the caller opts in: the request carries an
  ``Idempotency-Key`` header, or ``idempotent=True`` is passed. Two outcomes are safe for any
  method because the server provably did not process the request: **429** (the server refused
  it, RFC 6585 §4) and a **connect error** (the request never left: connection refused, DNS
  failure).
- **Cancellation** (``asyncio.CancelledError``) is never retryable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp

from resilience.aiohttp.errors import HTTPStatusError, RetryableHTTPStatus
from resilience.aiohttp.headers import DEFAULT_MAX_RETRY_AFTER, wait_hint
from resilience.errors import CircuitOpen, ResilienceError, Retryable

__all__ = [
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENT_METHODS",
    "RETRYABLE_STATUSES",
    "is_idempotent",
    "is_retryable",
    "is_retryable_status",
    "raise_for_status",
    "retry_on",
]

#: Methods that RFC 9110 §9.2.2 defines as idempotent.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Statuses worth retrying.
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
#: The request header whose presence makes a POST or PATCH safe to retry.
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Statuses that mean "not processed", safe to retry for any method.
_NOT_PROCESSED = frozenset({429})


def is_idempotent(method: str, headers: Mapping[str, str] | None = None) -> bool:
    """Whether a request may be repeated: an idempotent method, or an ``Idempotency-Key``."""
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    if headers is None:
        return False
    try:
        return IDEMPOTENCY_HEADER in headers or any(
            isinstance(k, str) and k.lower() == IDEMPOTENCY_HEADER.lower() for k in headers
        )
    except TypeError:
        return False


def is_retryable_status(status: int, *, idempotent: bool = True) -> bool:
    """Whether a response status is worth retrying for a request that is (or is not) idempotent.

    429 is retryable for every request; 408, 502, 503 and 504 only for idempotent ones.
    """
    if status in _NOT_PROCESSED:
        return True
    return idempotent and status in RETRYABLE_STATUSES


def raise_for_status(
    response: aiohttp.ClientResponse,
    *,
    idempotent: bool | None = None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> aiohttp.ClientResponse:
    """Return ``response`` if its status is below 400; otherwise release it and raise.

    Raises :class:`~resilience.aiohttp.RetryableHTTPStatus` (a :class:`resilience.Retryable`)
    when the status is retryable for this request, :class:`~resilience.aiohttp.HTTPStatusError`
    otherwise. Both carry ``status``, ``headers``, the redacted ``url``, ``method`` and
    ``retry_after`` (from ``Retry-After``, else the rate-limit header fields; capped at
    ``max_retry_after`` seconds; always ``None`` on a non-retryable error, so that no policy
    treats it as a retry hint: the raw headers are still in ``headers``) with
    ``retry_after_source`` (``"retry_after"`` or ``"rate_limit_header"``, see
    :func:`~resilience.aiohttp.wait_hint`). The response is
    released first (its connection returns to the pool, or is closed when the body was not
    read), so nothing leaks when the caller retries.

    Args:
        response: the response to check.
        idempotent: whether the request may be repeated; default: decided from its method and
            an ``Idempotency-Key`` request header (see :func:`is_idempotent`).
        max_retry_after: the cap of the ``retry_after`` hint, in seconds.
    """
    status = response.status
    if status < 400:
        return response
    method = response.method
    if idempotent is None:
        idempotent = is_idempotent(method, response.request_info.headers)
    retryable = is_retryable_status(status, idempotent=idempotent)
    hint = wait_hint(response.headers, max_delay=max_retry_after) if retryable else None
    cls = RetryableHTTPStatus if retryable else HTTPStatusError
    exc = cls(
        status=status,
        method=method,
        url=response.url,
        headers=response.headers,
        reason=response.reason or "",
        retry_after=None if hint is None else hint[0],
        retry_after_source=None if hint is None else hint[1],
    )
    response.release()
    raise exc


def is_retryable(exc: BaseException, *, idempotent: bool = True) -> bool:
    """Whether an exception raised by an aiohttp call is worth retrying.

    - :class:`~resilience.aiohttp.HTTPStatusError`: its ``retryable`` attribute (decided by
      :func:`raise_for_status` from the status and the request's method).
    - connect errors (:class:`aiohttp.ClientConnectorError`, DNS failures): True for every
      method, the request never left; but certificate and other TLS errors: False.
    - the request may have reached the server (:class:`aiohttp.ServerDisconnectedError`,
      :class:`aiohttp.ClientOSError`, :class:`aiohttp.ClientPayloadError`, timeouts): True only
      when ``idempotent``.
    - the library's own errors follow :class:`resilience.Retry`'s fixed rules: a
      :class:`resilience.CircuitOpen` is retryable (the retrier waits for the half-open probe
      only when its deadline covers it), other :class:`resilience.ResilienceError`: False.
    - ``asyncio.CancelledError``: False; other :class:`resilience.Retryable`: True; anything
      else: False.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, HTTPStatusError):
        return exc.retryable
    if isinstance(exc, ResilienceError):
        return isinstance(exc, CircuitOpen)
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    if isinstance(exc, aiohttp.ClientResponseError):
        return False
    if isinstance(
        exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)
    ):
        return idempotent
    return isinstance(exc, Retryable)


def retry_on(*, idempotent: bool = True) -> Callable[[BaseException], bool]:
    """A ``retry_on`` predicate for :class:`resilience.Retry` around aiohttp calls.

    Use ``retry_on(idempotent=False)`` for a POST without an idempotency key: transport errors
    that may have reached the server are then not retried; connect errors and 429 still are.
    """

    def predicate(exc: BaseException) -> bool:
        return is_retryable(exc, idempotent=idempotent)

    predicate.__qualname__ = f"retry_on(idempotent={idempotent})"
    return predicate
