"""What :class:`resilience.Retry` retries: the default classification and ``retry_on``.

Default (``retry_on=None``), an exception is retried when it

- subclasses :class:`resilience.Retryable`, or
- is a :class:`TimeoutError` (including ``asyncio.TimeoutError`` on 3.10) or a
  :class:`ConnectionError`, or
- carries an HTTP outcome that :func:`resilience.http.classify` calls retryable, whatever the
  client: the AI SDKs' status errors and connection errors, httpx's ``HTTPStatusError`` and
  ``TransportError`` family, aiohttp's errors (408, 409, 425, 429, 529 and 5xx; transport
  failures; an ``overloaded_error`` in a stream; the server's ``x-should-retry``), but never a
  caller's fault (400, 401, 403, 404, 413, 422) nor a 429 about billing
  (``insufficient_quota``, spend limits): those fail at once; see ``docs/http.md``; or
- carries no HTTP outcome but a numeric ``retry_after`` attribute (a retry hint);

and never otherwise. An exception's own ``retryable`` flag (``resilience.aiohttp``'s errors,
decided with the request's method) is taken as it is.

The library's own errors follow fixed rules whatever ``retry_on`` says, unless ``retry_on``
names one of their types explicitly (also when a client wrapped them, e.g. a transport
policy's ``CircuitOpen`` inside the ``anthropic`` SDK's ``APIConnectionError``):

- :class:`resilience.RateLimited` is never retried: the limiter already waited as long as the
  call's deadline allowed, so another attempt could only fail the same way;
- :class:`resilience.StoreUnavailable` is never retried: the shared store is down, and
  hammering it is what the fallback policies are for;
- :class:`resilience.CircuitOpen` is retried only when the wait covers its ``retry_after``
  within the deadline and the backoff's cap, so the next attempt can be the half-open probe.

A predicate ``retry_on`` receives every :class:`Exception` (library errors included) and is
taken literally. :class:`BaseException` subclasses that are not :class:`Exception`
(``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``) are never seen: they
propagate at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from resilience.errors import CircuitOpen, ResilienceError, Retryable, library_error
from resilience.http import classify
from resilience.policies._hints import requested_wait
from resilience.policies._validate import exception_types

__all__ = [
    "ExceptionPredicate",
    "RetryOn",
    "compile_retry_on",
    "default_retryable",
    "hint_of",
    "hint_source_of",
]

#: A predicate over an exception: ``True`` means "retry".
ExceptionPredicate = Callable[[Exception], bool]
#: What ``retry_on`` accepts: an exception type, a tuple of types, or a predicate.
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | ExceptionPredicate | None

_TRANSIENT = (TimeoutError, asyncio.TimeoutError, ConnectionError)


def hint_of(obj: object) -> float | None:
    """The wait ``obj`` asks for, in seconds, or ``None`` (see
    :func:`resilience.policies._hints.requested_wait`)."""
    h = requested_wait(obj)
    return None if h is None else h.seconds


def hint_source_of(obj: object) -> Literal["retry_after", "rate_limit_header"]:
    """Where ``obj``'s wait hint came from, for telemetry's delay source (``"retry_after"``
    when it has none)."""
    h = requested_wait(obj)
    return "retry_after" if h is None else h.source


def _library_rule(exc: ResilienceError) -> bool:
    # CircuitOpen is retryable *if* the wait can cover retry_after: the retrier checks that.
    return isinstance(exc, CircuitOpen)


def default_retryable(exc: Exception) -> bool:
    """The default classification (see the module docs)."""
    lib = library_error(exc)
    if lib is not None:
        return _library_rule(lib)
    if isinstance(exc, (Retryable, *_TRANSIENT)):
        return True
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    c = classify(exc)
    if c is not None:
        return c.retryable
    return hint_of(exc) is not None


def compile_retry_on(retry_on: RetryOn) -> ExceptionPredicate:
    """Turn a ``retry_on`` option into a predicate; ``TypeError`` names ``retry_on``."""
    if retry_on is None:
        return default_retryable
    types = exception_types("retry_on", retry_on)
    if types is None:
        return retry_on  # type: ignore[return-value]  # a predicate (callable, checked)
    for t in types:
        if not issubclass(t, Exception):
            raise ValueError(
                f"retry_on must not contain {t.__name__}: cancellation and interpreter exits "
                "are never retried"
            )
    named_library = tuple(t for t in types if issubclass(t, ResilienceError))

    def by_type(exc: Exception) -> bool:
        if isinstance(exc, ResilienceError):
            if named_library and isinstance(exc, named_library):
                return True
            return _library_rule(exc)
        return isinstance(exc, types)

    return by_type
