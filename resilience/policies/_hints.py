"""How long an outcome asks us to wait: the one rule every policy uses.

:class:`resilience.Retry` (the next delay), the limiter (the fleet-wide pause of its key) and
the circuit breaker (a break at least that long) all ask :func:`requested_wait`, so a hint is
read the same way everywhere.
"""

from __future__ import annotations

import math
from typing import Any

from resilience.errors import library_error
from resilience.http import WaitHint, classify

__all__ = ["requested_wait"]


def _attribute_hint(obj: object) -> WaitHint | None:
    h: Any = getattr(obj, "retry_after", None)
    if h is None or isinstance(h, bool) or not isinstance(h, (int, float)):
        return None
    v = float(h)
    if not math.isfinite(v) or v < 0:
        return None
    if getattr(obj, "retry_after_source", None) == "rate_limit_header":
        return WaitHint(v, "rate_limit_header")
    return WaitHint(v, "retry_after")


def requested_wait(obj: object) -> WaitHint | None:
    """The wait that ``obj`` (an exception, or a returned value) asks for, or ``None``.

    In order:

    1. a numeric ``retry_after`` attribute (seconds, finite, ``>= 0``; the library's own
       errors, :mod:`resilience.aiohttp`'s, and any user exception that sets one), with its
       ``retry_after_source`` (``"rate_limit_header"`` or, by default, ``"retry_after"``);
    2. otherwise, for an object that carries an HTTP outcome (the AI SDKs' ``APIStatusError``,
       httpx's ``HTTPStatusError``, aiohttp's ``ClientResponseError``, a response; see
       :func:`resilience.http.outcome_of`) that is a *retryable* failure: the server's hint
       (``retry-after-ms``, ``Retry-After``, the rate-limit fields; see
       :func:`resilience.http.wait_hint`). A failure that is not retryable (a 400, a billing
       429) asks for no wait.
    """
    if isinstance(obj, BaseException):
        lib = library_error(obj)
        if lib is not None:  # a policy's refusal, possibly wrapped by a client
            return _attribute_hint(lib)
    hint = _attribute_hint(obj)
    if hint is not None:
        return hint
    if obj is None:
        return None
    c = classify(obj)
    return None if c is None else c.wait
