"""A client middleware (aiohttp ≥ 3.12) that puts policies around every request of a session.

Use it for **session-wide limiter + breaker**; do retries with the decorator form instead (see
``docs/aiohttp.md``: with retries outside aiohttp every attempt is a fresh request with its own
timeout, trace headers and CLIENT span, and limiter waits do not inflate HTTP durations).
"""

from __future__ import annotations

from typing import Literal

import aiohttp

from resilience.aiohttp._classify import is_idempotent, is_retryable_status, raise_for_status
from resilience.http import DEFAULT_MAX_RETRY_AFTER
from resilience.pipeline import CallContext, Pipeline, Policy

__all__ = ["ResilienceMiddleware"]

RaiseFor = Literal["retryable", "all", "never"]


class ResilienceMiddleware:
    """Runs every request of a session through ``policies`` (the first one outermost).

    ``ClientSession(middlewares=(ResilienceMiddleware(breaker, limiter),))`` makes each request
    pass the breaker and take a limiter permit. Policies with a ``key`` callable receive the
    :class:`aiohttp.ClientRequest` as their only argument, e.g.
    ``SlidingWindowLimiter(..., key=lambda req: req.url.host)``.

    Args:
        *policies: the policies, typically a :class:`resilience.CircuitBreaker` and a
            :class:`resilience.SlidingWindowLimiter`.
        raise_for_status: which responses the middleware turns into exceptions (after releasing
            them), so that the breaker counts them and a ``Retry-After`` penalizes the limiter
            key: ``"retryable"`` (default) the statuses of
            :func:`~resilience.aiohttp.is_retryable_status` (408, 409, 425, 429, 529, 5xx),
            ``"all"`` every status ≥ 400, ``"never"`` none (the breaker then sees only
            transport errors).
            The exception is a :class:`~resilience.aiohttp.RetryableHTTPStatus` when retrying is
            safe for the request (see :func:`~resilience.aiohttp.raise_for_status`), else an
            :class:`~resilience.aiohttp.HTTPStatusError`.
        max_retry_after: the cap of the ``retry_after`` hint carried by those exceptions.
        name: the operation name given to the policies (default ``"HTTP <METHOD>"``).

    Caveats (aiohttp's design, see ``docs/aiohttp.md``): the session's ``ClientTimeout.total``
    includes the limiter's wait; redirects and aiohttp's own reconnect re-enter the middleware
    (each hop takes a permit); a request-level ``middlewares=`` replaces the session's.
    """

    __slots__ = ("_pipeline", "max_retry_after", "name", "raise_for")

    def __init__(
        self,
        *policies: Policy,
        raise_for_status: RaiseFor = "retryable",
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        name: str | None = None,
    ) -> None:
        if raise_for_status not in ("retryable", "all", "never"):
            raise ValueError(
                f"raise_for_status must be 'retryable', 'all' or 'never', got {raise_for_status!r}"
            )
        if not (isinstance(max_retry_after, (int, float)) and max_retry_after >= 0):
            raise ValueError(f"max_retry_after must be >= 0 seconds, got {max_retry_after!r}")
        self._pipeline = Pipeline(*policies)
        self.raise_for: RaiseFor = raise_for_status
        self.max_retry_after = float(max_retry_after)
        self.name = name

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self._pipeline.policies)
        return f"ResilienceMiddleware({inner}, raise_for_status={self.raise_for!r})"

    def _should_raise(self, status: int) -> bool:
        if self.raise_for == "all":
            return status >= 400
        if self.raise_for == "retryable":
            return is_retryable_status(status)
        return False

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """The aiohttp middleware entry point."""
        ctx = CallContext(self.name or f"HTTP {request.method}", (request,), {})
        idempotent = is_idempotent(request.method, request.headers)

        async def send() -> aiohttp.ClientResponse:
            response = await handler(request)
            if self._should_raise(response.status):
                raise_for_status(
                    response, idempotent=idempotent, max_retry_after=self.max_retry_after
                )
            return response

        return await self._pipeline.execute(send, ctx)
