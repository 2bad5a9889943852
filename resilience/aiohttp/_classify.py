"""aiohttp's side of the HTTP rules: turn a response into an error, classify aiohttp errors.

The rules themselves (statuses, methods, wait hints, whose fault) live in :mod:`resilience.http`
and are shared by every integration; see ``docs/http.md`` for the table. In short:

- **Statuses.** 408, 409, 425, 429, 529 and every 5xx are retryable; every other status >= 400
  fails fast (a 400 or 404 will not get better by asking again), and so does a 429 about
  billing (``insufficient_quota``, spend limits). The server's ``x-should-retry`` wins.
- **Methods.** GET, HEAD, OPTIONS, TRACE, PUT and DELETE are idempotent
  (:data:`IDEMPOTENT_METHODS`). A POST or PATCH that got a 5xx or a timeout *may have been
  executed*, so it is retried only when the caller opts in: the request carries an
  ``Idempotency-Key`` header, or ``idempotent=True`` is passed. 429, 529 and a **connect
  error** are safe for any method: the server provably did not process the request.
- **Cancellation** (``asyncio.CancelledError``) is never retryable.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from resilience.aiohttp._errors import HTTPStatusError, RetryableHTTPStatus
from resilience.errors import CircuitOpen, ResilienceError, Retryable
from resilience.http import (
    DEFAULT_MAX_RETRY_AFTER,
    IDEMPOTENCY_HEADER,
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    Outcome,
    classify,
    is_idempotent,
    is_retryable_status,
)

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
    :func:`~resilience.aiohttp.wait_hint`; the server's ``x-should-retry`` wins over the
    status). The response is released first (its connection returns to the pool, or is closed
    when the body was not read), so nothing leaks when the caller retries.

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
    c = classify(
        Outcome(status, response.headers), idempotent=idempotent, max_delay=max_retry_after
    )
    retryable = c is not None and c.retryable
    hint = c.wait if c is not None else None
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
      :func:`raise_for_status` from the status, the body-less billing rules and the method).
    - the library's own errors follow :class:`resilience.Retry`'s fixed rules: a
      :class:`resilience.CircuitOpen` is retryable (the retrier waits for the half-open probe
      only when its deadline covers it), other :class:`resilience.ResilienceError`: False.
    - aiohttp's errors, by :func:`resilience.http.classify`: connect errors (connection
      refused, DNS failures): True for every method, the request never left; TLS errors:
      False; a :class:`aiohttp.ClientResponseError` by its status; errors after the request
      may have reached the server (:class:`aiohttp.ServerDisconnectedError`,
      :class:`aiohttp.ClientOSError`, :class:`aiohttp.ClientPayloadError`, timeouts): True
      only when ``idempotent``.
    - ``asyncio.CancelledError``: False; other :class:`resilience.Retryable`: True; anything
      else: False.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, HTTPStatusError):
        return exc.retryable
    if isinstance(exc, ResilienceError):
        return isinstance(exc, CircuitOpen)
    c = classify(exc, idempotent=idempotent)
    if c is not None:
        return c.retryable
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
