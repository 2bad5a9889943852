"""Whose fault a failure is, for the policies that route around the upstream: the one rule
:class:`resilience.Fallback` and :class:`resilience.Hedge` share.

A failure is worth serving from somewhere else when it says nothing about the request itself:

- a policy refused the call: :class:`resilience.CircuitOpen` (reason ``"circuit_open"``) or
  :class:`resilience.RateLimited` (``"rate_limited"``), also when a client wrapped them (the
  ``anthropic`` SDK's ``APIConnectionError`` from a transport policy's refusal);
- the upstream failed (reason ``"upstream_fault"``): anything carrying an HTTP outcome that
  :func:`resilience.http.classify` calls the upstream's fault (429 other than billing, 529,
  408, every 5xx, transport failures: connect, timeout, network, TLS), whatever the client
  or SDK; without an HTTP outcome, what :class:`resilience.Retry` retries by default: a
  :class:`resilience.Retryable`, a :class:`TimeoutError` or :class:`ConnectionError`, an
  exception whose own ``retryable`` flag is true, or one carrying a ``retry_after`` hint.

Never the caller's fault (400, 401, 403, 404, 409, 413, 422, a 429 about billing: another
upstream would refuse the same request), never the library's other errors
(:class:`resilience.StoreUnavailable`, :class:`resilience.StoreError`: name them in ``on=``),
never an exception unknown to these rules, and never :class:`asyncio.CancelledError` (not an
:class:`Exception`: it is not even seen).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from resilience.errors import CircuitOpen, RateLimited, Retryable, library_error
from resilience.http import classify
from resilience.policies._hints import requested_wait
from resilience.policies._validate import exception_types
from resilience.telemetry import names

__all__ = [
    "REASON_CIRCUIT_OPEN",
    "REASON_ERROR",
    "REASON_RATE_LIMITED",
    "REASON_RESULT",
    "REASON_UPSTREAM",
    "Trigger",
    "compile_trigger",
    "default_trigger",
    "trigger_reason",
]

REASON_CIRCUIT_OPEN = names.FALLBACK_REASON_CIRCUIT_OPEN
REASON_RATE_LIMITED = names.FALLBACK_REASON_RATE_LIMITED
REASON_UPSTREAM = names.FALLBACK_REASON_UPSTREAM_FAULT
#: An exception matched by an explicit ``on=`` that the default rules do not name.
REASON_ERROR = names.FALLBACK_REASON_ERROR
#: A returned value flagged by a result predicate.
REASON_RESULT = names.FALLBACK_REASON_RESULT

#: What ``on=`` accepts: an exception type, a tuple of types, or a predicate over the exception.
Trigger = type[BaseException] | tuple[type[BaseException], ...] | Callable[[Exception], bool]

_TRANSIENT = (TimeoutError, asyncio.TimeoutError, ConnectionError)


def trigger_reason(exc: Exception) -> str | None:
    """The reason ``exc`` triggers by default (see the module docs), or ``None``."""
    lib = library_error(exc)
    if lib is not None:
        if isinstance(lib, CircuitOpen):
            return REASON_CIRCUIT_OPEN
        if isinstance(lib, RateLimited):
            return REASON_RATE_LIMITED
        return None
    c = classify(exc)
    if c is not None:
        return REASON_UPSTREAM if c.fault == "upstream" else None
    if isinstance(exc, (Retryable, *_TRANSIENT)):
        return REASON_UPSTREAM
    if getattr(exc, "retryable", None) is True:
        return REASON_UPSTREAM
    return REASON_UPSTREAM if requested_wait(exc) is not None else None


def default_trigger(exc: Exception) -> bool:
    """Whether ``exc`` is a failure to route around by default: a policy's refusal
    (:class:`resilience.CircuitOpen`, :class:`resilience.RateLimited`) or an upstream fault,
    never the caller's fault (see :mod:`resilience.policies._faults`).

    Use it to extend the default in a predicate: ``on=lambda e: default_trigger(e) or
    isinstance(e, MyError)``.
    """
    return trigger_reason(exc) is not None


def _named_reason(exc: Exception) -> str:
    return trigger_reason(exc) or REASON_ERROR


def compile_trigger(param: str, on: object) -> Callable[[Exception], str | None]:
    """An ``on=`` option as a function from an exception to its reason (``None``: no trigger).

    ``None`` is the default rule; types and predicates replace it (taken literally). The
    reason of a matched exception is the default rule's, else ``"error"``.
    """
    if on is None:
        return trigger_reason
    types = exception_types(param, on)
    if types is None:
        pred: Callable[[Exception], object] = on  # type: ignore[assignment]

        def by_predicate(exc: Exception) -> str | None:
            return _named_reason(exc) if pred(exc) else None

        return by_predicate
    for t in types:
        if not issubclass(t, Exception):
            raise ValueError(
                f"{param} must not contain {t.__name__}: cancellation and interpreter exits "
                "never trigger"
            )

    def by_type(exc: Exception) -> str | None:
        if isinstance(exc, types):
            return _named_reason(exc)
        lib = library_error(exc)  # a refusal wrapped by a client, named in `on`
        if lib is not None and isinstance(lib, types):
            return _named_reason(exc)
        return None

    return by_type
