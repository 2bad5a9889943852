"""``resilience.httpx2.ResilientTransport``: the transport for ``httpx2`` (imports httpx2)."""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import httpx2

from resilience.http import DEFAULT_MAX_RETRY_AFTER
from resilience.httpx._core import RaiseFor, TransportCore
from resilience.pipeline import Policy

__all__ = ["ResilientTransport"]


class ResilientTransport(TransportCore, httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that runs every request through resilience policies; ``httpx2``
    is what the ``openai`` and ``anthropic`` SDKs are built on::

        client = openai.AsyncOpenAI(
            http_client=httpx2.AsyncClient(transport=ResilientTransport(retry, breaker, limiter)),
            max_retries=0,  # resilience retries, the SDK must not
        )

    ``httpx2.AsyncClient(transport=ResilientTransport(Retry(...), breaker, limiter))``: each
    request passes the policies (the first one outermost, as in :class:`resilience.Pipeline`)
    around the wrapped transport. Policies with a ``key`` callable receive the
    ``httpx2.Request``, e.g. ``key=lambda request: request.url.host``.

    What happens to each response, the options, and the warning when the client retries by
    itself too: :class:`resilience.httpx._core.TransportCore`; ``docs/httpx.md``.
    """

    _httpx: ClassVar[ModuleType] = httpx2

    def __init__(
        self,
        *policies: Policy,
        transport: httpx2.AsyncBaseTransport | None = None,
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

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` through the policies (see the class docs)."""
        response: httpx2.Response = await self._handle(request)
        return response

    async def __aenter__(self) -> ResilientTransport:
        await self._aenter()
        return self

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._aclose()
