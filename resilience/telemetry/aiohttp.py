"""``request_hook`` for ``opentelemetry-instrumentation-aiohttp-client``: ``resend_count``.

The HTTP semantic conventions ask for one CLIENT span per physical send, and for
``http.request.resend_count`` (the ordinal of the resend: 1 for the first retry, 2 for the
second; absent on the first send) on the spans of resent requests. The aiohttp instrumentation
creates the CLIENT span in ``on_request_start``, in the calling task, as a child of whatever
span is current there: inside a :class:`resilience.Pipeline` call that is our attempt span. It
then calls the ``request_hook`` synchronously, still in the calling task, so the hook can read
the attempt number that :func:`resilience.telemetry.instrument_attempt` keeps in a context
variable::

    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from resilience.telemetry.aiohttp import request_hook

    AioHttpClientInstrumentor().instrument(request_hook=request_hook)

or, per session, ``aiohttp.ClientSession(trace_configs=[create_trace_config(
request_hook=request_hook)])``. To keep a hook of your own, chain it with
:func:`make_request_hook`.

This only works when each attempt is a new ``session.request()`` (the retry runs outside
aiohttp, as with a decorated coroutine); a retry loop inside an aiohttp client middleware
produces one CLIENT span around all attempts (aio-libs/aiohttp#11438). The module does not
import aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resilience.telemetry import names
from resilience.telemetry._spans import ATTEMPT

__all__ = ["RequestHook", "make_request_hook", "request_hook"]

#: The hook signature of ``opentelemetry-instrumentation-aiohttp-client``:
#: ``(span, aiohttp.TraceRequestStartParams) -> None``.
RequestHook = Callable[[Any, Any], None]


def request_hook(span: Any, params: Any = None) -> None:
    """Set ``http.request.resend_count`` = attempt - 1 on the CLIENT span of a resent request.

    Does nothing on the first attempt, outside any attempt, or on a non-recording span.
    ``params`` (the aiohttp ``TraceRequestStartParams``) is not used.
    """
    n = ATTEMPT.get()
    if n >= 2 and span is not None and span.is_recording():
        span.set_attribute(names.ATTR_HTTP_REQUEST_RESEND_COUNT, n - 1)


def make_request_hook(user_hook: RequestHook | None = None) -> RequestHook:
    """A ``request_hook`` that sets ``http.request.resend_count`` and then calls ``user_hook``.

    Exceptions from ``user_hook`` propagate as they would without us (the instrumentation
    decides what to do with them).
    """
    if user_hook is None:
        return request_hook

    def hook(span: Any, params: Any) -> None:
        request_hook(span, params)
        user_hook(span, params)

    return hook
