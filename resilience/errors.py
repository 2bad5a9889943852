"""The library's exception types.

Every exception the library raises on its own account derives from :class:`ResilienceError`,
so ``except resilience.ResilienceError`` catches "a policy refused or could not decide" without
catching the errors of the function being protected.

An exception that carries a ``retry_after`` attribute (seconds, a float) is a *retry hint*:
:class:`resilience.Retry` waits at least that long before the next attempt, and a rate limiter in
the pipeline penalizes its key for that long so the whole fleet pauses.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpen",
    "ConcurrencyLimited",
    "library_error",
    "RateLimited",
    "ResilienceError",
    "Retryable",
    "StoreError",
    "StoreUnavailable",
]


class ResilienceError(Exception):
    """Base class of every exception raised by the library itself."""


class Retryable(Exception):
    """Mixin for exceptions that declare themselves retryable.

    :class:`resilience.Retry` retries subclasses of this by default. Set ``retry_after`` (seconds)
    on an instance to give the retrier a hint: the next attempt waits ``max(backoff, retry_after)``.
    """

    retry_after: float | None = None


class RateLimited(ResilienceError):
    """A rate limiter could not admit the call in time.

    Attributes:
        retry_after: seconds until the request could have been admitted (a lower bound when the
            key is contended by other callers).
        name: the limiter's name.
    """

    def __init__(self, name: str, retry_after: float, message: str | None = None) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(
            message or f"rate limiter {name!r}: not admitted; retry after {retry_after:.3f}s"
        )


class ConcurrencyLimited(RateLimited):
    """A concurrency limit had no permit for the call in time (every permit of its key was
    held, fleet-wide, until the call's timeout or deadline).

    A :class:`RateLimited`, so code that handles refusals of a limiter handles it too.

    Attributes:
        name: the concurrency limit's name.
        max_in_flight: the limit.
        retry_after: ``0.0``: a permit frees when a running call ends, which no clock
            predicts (a retrier then waits its own backoff).
        waited: seconds the call waited in the queue before giving up.
    """

    def __init__(self, name: str, max_in_flight: int, waited: float) -> None:
        self.max_in_flight = max_in_flight
        self.waited = waited
        super().__init__(
            name,
            0.0,
            f"concurrency limit {name!r}: all {max_in_flight} permits in flight; "
            f"not admitted after waiting {waited:.3f}s",
        )


class CircuitOpen(ResilienceError):
    """The circuit breaker is open (or half-open, every probe permit taken): the call failed fast.

    Attributes:
        retry_after: seconds until the breaker lets probes through again.
        name: the breaker's name.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit breaker {name!r} is open; retry after {retry_after:.3f}s")


class StoreUnavailable(ResilienceError):
    """The shared store (Redis) could not be reached or did not answer within its timeout.

    The original ``redis`` exception is chained as ``__cause__``; its text never includes
    credentials.
    """


class StoreError(ResilienceError):
    """The shared store (Redis) is up but refused the decision: a misconfiguration or a bug,
    not an outage.

    For example a key of the store's prefix that holds a value of another type (``WRONGTYPE``:
    another application writes under the same prefix), a Redis user without permission for
    ``EVALSHA`` (``NOPERM``), or a script error. No fallback mode hides it (fallbacks exist for
    outages) and the store is not put in degraded mode; the message names the problem and the
    keys of the decision. The original ``redis`` exception is chained as ``__cause__``; its text
    never includes credentials.
    """


def library_error(exc: BaseException) -> ResilienceError | None:
    """``exc`` itself if it is a :class:`ResilienceError`, else the first one among its explicit
    causes (``raise ... from``), else ``None``.

    A client that wraps what its transport raised (the ``anthropic`` SDK turns anything its
    httpx transport raises into ``APIConnectionError`` from it) must not turn a policy's
    refusal inside that transport (:class:`CircuitOpen`, :class:`RateLimited`) into what looks
    like a network failure to the policies outside it.
    """
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        if isinstance(e, ResilienceError):
            return e
        e = e.__cause__
        seen += 1
    return None
