"""The transport's logic, written once for httpx and httpx2 (the module is a parameter).

No HTTP client is imported here: :mod:`resilience.httpx` (httpx) and :mod:`resilience.httpx2`
(httpx2) each subclass their client's ``AsyncBaseTransport`` and mix this in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from types import ModuleType
from typing import Any, ClassVar, Literal

from resilience.http import (
    DEFAULT_MAX_RETRY_AFTER,
    classify,
    client_retries,
    is_idempotent,
    outcome_of,
)
from resilience.httpx._errors import HTTPFailure, RetryableHTTPFailure
from resilience.pipeline import CallContext, Pipeline, Policy
from resilience.policies.retry._retry import add_note

__all__ = ["RaiseFor", "TransportCore", "logger"]

logger = logging.getLogger("resilience.httpx")

#: Which responses become failures inside the pipeline (see :class:`TransportCore`).
RaiseFor = Literal["retryable", "all", "never"]

_SDK_RETRY_HEADER = "x-stainless-retry-count"


class TransportCore:
    """The shared implementation of ``ResilientTransport`` (httpx and httpx2).

    Subclasses set ``_httpx`` to their client module and subclass its ``AsyncBaseTransport``.

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
        transport: the transport to wrap (default ``AsyncHTTPTransport()`` of the client).
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

    _httpx: ClassVar[ModuleType]

    def __init__(
        self,
        *policies: Policy,
        transport: Any = None,
        raise_for_status: RaiseFor = "retryable",
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        name: str | None = None,
    ) -> None:
        if raise_for_status not in ("retryable", "all", "never"):
            raise ValueError(
                f"raise_for_status must be 'retryable', 'all' or 'never', got {raise_for_status!r}"
            )
        if (
            isinstance(max_retry_after, bool)
            or not isinstance(max_retry_after, (int, float))
            or not (0 <= max_retry_after < math.inf)
        ):
            raise ValueError(
                f"max_retry_after must be a finite number of seconds >= 0, got {max_retry_after!r}"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        m = self._httpx
        if transport is None:
            transport = m.AsyncHTTPTransport()
        elif not isinstance(transport, m.AsyncBaseTransport):
            raise TypeError(
                f"transport must be a {m.__name__}.AsyncBaseTransport, "
                f"got {type(transport).__name__}"
            )
        self._pipeline = Pipeline(*policies)
        self._transport = transport
        self.raise_for: RaiseFor = raise_for_status
        self.max_retry_after = float(max_retry_after)
        self.name = name
        self._warned = False

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self._pipeline.policies)
        return (
            f"{type(self).__name__}({inner}, transport={self._transport!r}, "
            f"raise_for_status={self.raise_for!r})"
        )

    @property
    def transport(self) -> Any:
        """The wrapped transport."""
        return self._transport

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The policies, outermost first."""
        return self._pipeline.policies

    # -- the request --------------------------------------------------------------------------

    def _check_sdk_retry(self, request: Any) -> None:
        if self._warned:
            return
        count = client_retries(request)
        if count > 0:
            self._warned = True
            logger.warning(
                "%s: a request carries %s: %d, so the client retried it itself on top of "
                "this transport's policies; give the SDK max_retries=0 (e.g. "
                "AsyncOpenAI(..., max_retries=0)) so that only resilience retries "
                "(this warning is logged once per transport)",
                type(self).__name__,
                _SDK_RETRY_HEADER,
                count,
            )

    async def _handle(self, request: Any) -> Any:
        """Run ``request`` through the pipeline; return a response or raise the client's error."""
        m = self._httpx
        self._check_sdk_retry(request)
        if not isinstance(request.stream, m.ByteStream):
            # A streaming body is read once, so that each attempt can send it again.
            await request.aread()
        idempotent = is_idempotent(request.method, request.headers)
        ctx = CallContext(self.name or f"HTTP {request.method}", (request,), {})
        produced: list[Any] = []

        async def send() -> Any:
            try:
                response = await self._transport.handle_async_request(request)
                produced.append(response)
                return await self._check(request, response, idempotent)
            except HTTPFailure:
                raise
            except Exception as exc:  # the client's transport error (also while reading)
                c = classify(exc, idempotent=idempotent, max_delay=self.max_retry_after)
                if c is None or c.fault is None:
                    raise
                cls = RetryableHTTPFailure if c.retryable else HTTPFailure
                raise cls(request, error=exc, classification=c) from exc

        outcome: Any = None
        failure: HTTPFailure | None = None
        try:
            outcome = await self._pipeline.execute(send, ctx)
        except HTTPFailure as exc:
            if exc.request is not request:
                raise
            if exc.response is not None:
                outcome = exc.response
            else:
                failure = exc
        finally:
            # Close whatever response the pipeline dropped (cancellation after a success, ...).
            for r in produced:
                if r is not outcome and not r.is_closed:
                    with contextlib.suppress(Exception):
                        await r.aclose()
        if failure is not None:
            error = failure.error  # the client's own exception, as if no transport were here
            assert error is not None
            for note in getattr(failure, "__notes__", None) or ():
                if isinstance(note, str):  # the retrier's account of the attempts
                    add_note(error, note)
            raise error
        return outcome

    async def _check(self, request: Any, response: Any, idempotent: bool) -> Any:
        """Return ``response``, or raise an :class:`HTTPFailure` carrying it (body read)."""
        status = response.status_code
        if status < 400 or self.raise_for == "never":
            return response
        try:
            body = await self._buffer(response)
        except BaseException:
            with contextlib.suppress(Exception):
                await response.aclose()
            raise
        c = classify(
            outcome_of(response, body=body), idempotent=idempotent, max_delay=self.max_retry_after
        )
        if c is None or c.fault is None:
            return response
        if not (self.raise_for == "all" or c.retryable or c.fault == "upstream"):
            return response  # the caller's fault (400, 401, 413, billing): the client decides
        cls = RetryableHTTPFailure if c.retryable else HTTPFailure
        raise cls(request, response=response, body=body, classification=c)

    async def _buffer(self, response: Any) -> Any:
        """Read an error response's body into memory, release its connection, and give the
        response a replayable stream of the same (still encoded) bytes; returns the decoded
        body (JSON, else text, else ``None``)."""
        m = self._httpx
        stream = response.stream
        try:
            raw = b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()
        response.stream = m.ByteStream(raw)
        try:
            probe = m.Response(
                response.status_code, headers=response.headers, stream=m.ByteStream(raw)
            )
            probe.read()
            text = probe.text
        except Exception:  # undecodable (bad gzip, ...): classify by status and headers
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text or None

    async def _aclose(self) -> None:
        await self._transport.aclose()

    async def _aenter(self) -> None:
        await self._transport.__aenter__()
