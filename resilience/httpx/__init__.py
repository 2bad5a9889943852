"""httpx integration: a transport that runs every request through resilience policies.

Needs the ``httpx`` extra (``pip install 'resilience[httpx]'``)::

    import httpx
    from resilience import CircuitBreaker, Retry, SlidingWindowLimiter
    from resilience.httpx import ResilientTransport

    transport = ResilientTransport(
        Retry(attempts=5, deadline=60), CircuitBreaker(), SlidingWindowLimiter(50, 60)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)  # a 429 or 503 was retried, after its Retry-After

For ``httpx2`` (the openai and anthropic SDKs), the same transport is
:class:`resilience.httpx2.ResilientTransport` (extra ``httpx2``). Importing this package does
not import httpx: ``ResilientTransport`` is loaded on first access; the failures the policies
see inside the transport (:class:`HTTPFailure`, :class:`RetryableHTTPFailure`) need no client.
See ``docs/httpx.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilience.httpx._core import RaiseFor
from resilience.httpx._errors import HTTPFailure, RetryableHTTPFailure

if TYPE_CHECKING:
    from resilience.httpx._transport_httpx import ResilientTransport

__all__ = ["HTTPFailure", "RaiseFor", "ResilientTransport", "RetryableHTTPFailure"]


def __getattr__(name: str) -> Any:
    if name == "ResilientTransport":
        from resilience.httpx._transport_httpx import ResilientTransport

        return ResilientTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
