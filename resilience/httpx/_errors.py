"""What the policies see inside the transport: a failure response or transport error, decided.

The transport turns an HTTP failure into one of these exceptions *inside* its pipeline, so that
:class:`resilience.Retry` retries it (or not), a :class:`resilience.CircuitBreaker` counts it and
a :class:`resilience.SlidingWindowLimiter` pauses its key for the server's wait hint. The client
never sees them: after the pipeline it gets the last response (the SDK then raises its own typed
error) or the original transport exception.
"""

from __future__ import annotations

from typing import Any

from resilience.errors import Retryable
from resilience.http import Classification, HintSource

__all__ = ["HTTPFailure", "RetryableHTTPFailure"]


class HTTPFailure(Exception):
    """An HTTP failure the transport decided **not** to retry (an upstream fault a breaker
    should count: a 500 after a POST without idempotency key, a read timeout after one, a
    ``x-should-retry: false``; or any status >= 400 with ``raise_for_status="all"``).

    Attributes:
        request: the client's request (an ``httpx.Request`` / ``httpx2.Request``).
        response: the response (its body already read), or ``None`` for a transport error.
        error: the client's transport exception, or ``None`` for a response.
        status_code: the response's status, or ``None``.
        headers: the response's headers, or ``None``.
        body: the response's error body (decoded JSON, else text), or ``None``.
        classification: :func:`resilience.http.classify`'s decision (with the request's
            idempotency), or ``None`` when nothing classified it.
        retryable: the decision: ``False`` here, ``True`` on :class:`RetryableHTTPFailure`.
        retry_after: the server's wait hint in seconds when retryable, else ``None``.
        retry_after_source: ``"retry_after"`` or ``"rate_limit_header"`` (telemetry's delay
            source), or ``None``.
    """

    retryable = False

    def __init__(
        self,
        request: Any,
        *,
        response: Any = None,
        error: BaseException | None = None,
        body: Any = None,
        classification: Classification | None = None,
    ) -> None:
        self.request = request
        self.response = response
        self.error = error
        self.status_code: int | None = None if response is None else response.status_code
        self.headers: Any = None if response is None else response.headers
        self.body = body
        self.classification = classification
        wait = classification.wait if classification is not None and self.retryable else None
        self.retry_after: float | None = None if wait is None else wait.seconds
        self.retry_after_source: HintSource | None = None if wait is None else wait.source
        super().__init__(self._describe())

    def _describe(self) -> str:
        method = getattr(self.request, "method", "?")
        url = getattr(self.request, "url", None)
        where = f"{method} {getattr(url, 'host', '') or ''}{getattr(url, 'path', '')}"
        if self.response is not None:
            what = f"{self.status_code}"
        else:
            what = type(self.error).__name__ if self.error is not None else "failure"
        reason = self.classification.reason if self.classification is not None else ""
        hint = "" if self.retry_after is None else f"; retry after {self.retry_after:g}s"
        return f"{what} from {where}" + (f" ({reason})" if reason else "") + hint


class RetryableHTTPFailure(HTTPFailure, Retryable):
    """An HTTP failure worth retrying (a :class:`resilience.Retryable`): a 429, a 529, a 5xx or
    timeout of an idempotent request, a refused connection; ``retry_after`` carries the
    server's hint, so the retrier waits for it and a limiter beneath pauses its key."""

    retryable = True
