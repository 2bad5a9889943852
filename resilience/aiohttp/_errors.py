"""Typed HTTP errors raised by :func:`resilience.aiohttp.raise_for_status` and the middleware.

They subclass :class:`aiohttp.ClientResponseError`, so existing ``except
aiohttp.ClientResponseError`` handlers keep working, and carry what a policy needs to decide:

- :class:`HTTPStatusError`: ``status``, ``headers`` (the response's), ``method``, a **redacted**
  ``url`` (no userinfo, query values replaced by ``REDACTED``, no fragment: an API key in a query
  string never reaches a log or a span), ``retry_after`` (the server's hint in seconds, or
  ``None``), ``retry_after_source`` (which header gave it) and ``retryable``.
- :class:`RetryableHTTPStatus`: the same, and also a :class:`resilience.Retryable`, so
  :class:`resilience.Retry` retries it by default, waiting at least ``retry_after``; a
  :class:`resilience.SlidingWindowLimiter` beneath which it is raised penalizes its key for
  ``retry_after`` (the fleet pauses); a :class:`resilience.CircuitBreaker` counts it as a failure.

These are deliberately *not* :class:`resilience.ResilienceError` subclasses: they report what the
upstream said, not a refusal by one of our policies.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from resilience.errors import Retryable
from resilience.http import HintSource

__all__ = ["HTTPStatusError", "RetryableHTTPStatus", "redact_url"]


def redact_url(url: str | URL) -> str:
    """``url`` without userinfo or fragment, each query value replaced by ``REDACTED``.

    ``https://user:pw@api.example/v1/x?key=s3cret&page=2#f`` becomes
    ``https://api.example/v1/x?key=REDACTED&page=REDACTED``. A value that is not a URL is
    returned as ``"<unparseable URL>"``.
    """
    try:
        u = url if isinstance(url, URL) else URL(str(url))
        u = u.with_user(None).with_password(None).with_fragment(None)
        if u.query_string:
            u = u.with_query([(k, "REDACTED") for k in u.query])
        return str(u)
    except (ValueError, TypeError):
        return "<unparseable URL>"


class HTTPStatusError(aiohttp.ClientResponseError):
    """The upstream answered an error status (≥ 400).

    Attributes:
        status: the HTTP status.
        headers: the response's headers (a read-only case-insensitive multidict).
        method: the request method.
        url: the request URL, redacted (see :func:`redact_url`).
        retry_after: the server's wait hint in seconds (``Retry-After``, else the rate-limit
            fields), within ``[0, max_retry_after]``, or ``None``; set only on
            :class:`RetryableHTTPStatus` (a hint on a non-retryable error would make
            :class:`resilience.Retry` retry it).
        retry_after_source: where ``retry_after`` came from: ``"retry_after"`` (the
            ``Retry-After`` field) or ``"rate_limit_header"`` (a ``RateLimit`` /
            ``X-RateLimit-Reset`` reset); ``None`` without a hint. :class:`resilience.Retry`
            reports it as ``resilience.retry.delay_source`` when the hint sets the delay.
        retryable: whether retrying is safe and useful (see :mod:`resilience.aiohttp._classify`).
    """

    retryable = False

    def __init__(
        self,
        *,
        status: int,
        method: str,
        url: str | URL,
        headers: Any = None,
        reason: str = "",
        retry_after: float | None = None,
        retry_after_source: HintSource | None = None,
    ) -> None:
        if retry_after_source not in (None, "retry_after", "rate_limit_header"):
            raise ValueError(
                "retry_after_source must be 'retry_after', 'rate_limit_header' or None, "
                f"got {retry_after_source!r}"
            )
        self.url = redact_url(url)
        hdrs: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers or {}))
        info = aiohttp.RequestInfo(URL(self.url), method, CIMultiDictProxy(CIMultiDict()))
        super().__init__(info, (), status=status, message=reason, headers=hdrs)
        self.method = method
        self.retry_after = retry_after
        self.retry_after_source: HintSource | None = (
            None if retry_after is None else (retry_after_source or "retry_after")
        )

    def __str__(self) -> str:
        hint = "" if self.retry_after is None else f"; retry after {self.retry_after:g}s"
        reason = f" {self.message}" if self.message else ""
        return f"{self.status}{reason} from {self.method} {self.url}{hint}"

    def __reduce__(self) -> Any:  # picklable across worker processes
        return (
            _rebuild,
            (
                type(self),
                self.status,
                self.method,
                self.url,
                dict(self.headers or {}),
                self.message,
                self.retry_after,
                self.retry_after_source,
            ),
        )


class RetryableHTTPStatus(HTTPStatusError, Retryable):
    """An error status that is worth retrying (429, 408, 502, 503, 504 by default).

    A :class:`resilience.Retryable`: :class:`resilience.Retry` retries it by default and waits at
    least ``retry_after`` before the next attempt.
    """

    retryable = True


def _rebuild(
    cls: type[HTTPStatusError],
    status: int,
    method: str,
    url: str,
    headers: dict[str, str],
    reason: str,
    retry_after: float | None,
    retry_after_source: HintSource | None = None,
) -> HTTPStatusError:
    return cls(
        status=status,
        method=method,
        url=url,
        headers=headers,
        reason=reason,
        retry_after=retry_after,
        retry_after_source=retry_after_source,
    )
