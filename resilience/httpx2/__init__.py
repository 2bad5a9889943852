"""httpx2 integration (what the openai and anthropic SDKs use): the resilient transport.

Needs the ``httpx2`` extra (``pip install 'resilience[httpx2]'``); the same adapter as
:mod:`resilience.httpx`, for ``httpx2``::

    import anthropic, httpx2
    from resilience.httpx2 import ResilientTransport

    client = anthropic.AsyncAnthropic(
        http_client=httpx2.AsyncClient(transport=ResilientTransport(retry, breaker, limiter)),
        max_retries=0,  # resilience retries, the SDK must not
    )

See ``docs/httpx.md``.
"""

from __future__ import annotations

from resilience.httpx import HTTPFailure, RaiseFor, RetryableHTTPFailure
from resilience.httpx._transport_httpx2 import ResilientTransport

__all__ = ["HTTPFailure", "RaiseFor", "ResilientTransport", "RetryableHTTPFailure"]
