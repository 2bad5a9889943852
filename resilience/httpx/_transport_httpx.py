"""``resilience.httpx.ResilientTransport``: the transport for ``httpx`` (imports httpx)."""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import httpx

from resilience.http import DEFAULT_MAX_RETRY_AFTER
from resilience.httpx._core import RaiseFor, TransportCore
from resilience.pipeline import Policy

__all__ = ["ResilientTransport"]


class ResilientTransport(TransportCore, httpx.AsyncBaseTransport):
    """An ``httpx`` transport that runs every request through resilience policies.

    ``httpx.AsyncClient(transport=ResilientTransport(Retry(...), breaker, limiter))``: each
    request passes the policies (the first one outermost, as in :class:`resilience.Pipeline`)
    around the wrapped transport. Policies with a ``key`` callable receive the
    ``httpx.Request``, e.g. ``key=lambda request: request.url.host``.

    Responses are classified by :func:`resilience.http.classify` (status, headers and error
    body, with the request's idempotency: see ``docs/httpx.md``). A retryable failure (429, 529,
    a 5xx of an idempotent request, a refused connection, ...) becomes a
    :class:`~resilience.httpx.RetryableHTTPFailure` inside the pipeline, carrying the server's
    wait hint as ``retry_after``: :class:`resilience.Retry` retries it after at least that
    long, a :class:`resilience.SlidingWindowLimiter` pauses its key for it, a
    :class:`resilience.CircuitBreaker` counts it. An upstream fault that must not be retried (a
    500 after a POST without ``Idempotency-Key``) is an :class:`~resilience.httpx.HTTPFailure`
    (counted, not retried). The caller's faults (400, 401, 404, 413, a billing 429) are
    returned at once, unseen by the breaker. When the pipeline ends, the client gets a success
    response, or the **last error response** (body read, so it raises its own typed error), or
    its own transport exception; a refusal of a policy (:class:`resilience.CircuitOpen`,
    :class:`resilience.RateLimited`) propagates as is. Success responses are not buffered:
    streams stream.

    Args:
        *policies: the policies (a :class:`resilience.Pipeline` works too).
        transport: the transport to wrap (default ``httpx.AsyncHTTPTransport()``).
        raise_for_status: which error responses become failures inside the pipeline:
            ``"retryable"`` (default) the retryable ones and the upstream's faults;
            ``"all"`` every status >= 400 (a breaker then counts 400s); ``"never"`` none (the
            policies see transport errors only).
        max_retry_after: the cap of the wait hint, in seconds (default 6 h).
        name: the operation name given to the policies (default ``"HTTP <METHOD>"``).

    A client that retries by itself on top (an AI SDK with ``max_retries`` > 0) multiplies the
    attempts: a warning is logged once per transport when a request carries
    ``x-stainless-retry-count`` above 0.
    """

    _httpx: ClassVar[ModuleType] = httpx

    def __init__(
        self,
        *policies: Policy,
        transport: httpx.AsyncBaseTransport | None = None,
        raise_for_status: RaiseFor = "retryable",
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        name: str | None = None,
    ) -> None:
        super().__init__(
            *policies,
            transport=transport,
            raise_for_status=raise_for_status,
            max_retry_after=max_retry_after,
            name=name,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the policies (see the class docs)."""
        response: httpx.Response = await self._handle(request)
        return response

    async def __aenter__(self) -> ResilientTransport:
        await self._aenter()
        return self

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._aclose()
