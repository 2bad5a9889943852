"""From an HTTP outcome to a decision: retry or not, wait how long, whose fault, billed or not.

The table (the SDKs' own retry rules, with billing errors failing fast), for a status >= 400:

=================================  =========  ========  =============================
status                             retryable  fault     processed (may be billed)
=================================  =========  ========  =============================
429 (rate)                         yes        upstream  no
529 (Anthropic "overloaded")       yes        upstream  no
500, 502, 503, 504, other 5xx      yes        upstream  yes
408                                yes        upstream  yes
409 (lock timeout), 425            yes        caller    yes
429 about billing (see below)      no         caller    no
400, 401, 403, 404, 413, 422, ...  no         caller    yes
=================================  =========  ========  =============================

A body error type or code in :data:`BILLING_ERRORS` (OpenAI's ``insufficient_quota``,
Anthropic's spend-limit errors) is never retried and is the caller's fault, whatever the status.
Without an error status, an error body (a mid-stream ``error`` event) is the upstream's fault
and may have been processed; it is retryable when its type is in :data:`RETRYABLE_ERROR_TYPES`
(``overloaded_error``, ...). Transport failures: ``connect`` is retryable, the upstream's fault
and not processed; ``timeout`` and ``network`` are retryable, the upstream's fault and may have been
processed; ``tls`` is not retryable (the upstream's fault, not processed); ``invalid`` is not
retryable (the caller's fault, not processed).

Then two overrides, in this order: a request that is not idempotent is not retried when it may
have been processed (``idempotent=False``: a 500 or a timeout after a POST; 429, 529 and connect
failures stay retryable); and the server's ``x-should-retry: true`` / ``false`` wins over
everything above (as in the SDKs: it is the server's explicit word).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from resilience.http._headers import (
    DEFAULT_MAX_RETRY_AFTER,
    HeadersLike,
    check_max_delay,
    first,
    index_headers,
)
from resilience.http._hints import WaitHint, wait_hint_of_index
from resilience.http._outcome import Outcome, outcome_of

__all__ = [
    "BILLING_ERRORS",
    "Classification",
    "Fault",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENT_METHODS",
    "NOT_PROCESSED_STATUSES",
    "RETRYABLE_ERROR_TYPES",
    "RETRYABLE_STATUSES",
    "classify",
    "is_idempotent",
    "is_retryable_status",
]

#: Whose fault a failure is: ``"caller"`` (the request was wrong, the upstream answered; a
#: circuit breaker should not count it) or ``"upstream"`` (rate limits, overload, server errors,
#: transport failures; a breaker counts it).
Fault = Literal["caller", "upstream"]

#: Methods that RFC 9110 §9.2.2 defines as idempotent.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: The request header whose presence makes any request safe to resend (Stripe's convention,
#: draft-ietf-httpapi-idempotency-key-header).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The listed error statuses worth retrying; every other 5xx is retryable too.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
#: Statuses that prove the upstream did not process (nor bill) the request: safe to resend for
#: any method.
NOT_PROCESSED_STATUSES = frozenset({429, 529})
#: Error types or codes that mean "out of money or spend limit", not "too fast": never retried.
BILLING_ERRORS = frozenset(
    {
        "insufficient_quota",  # OpenAI (type and code)
        "billing_hard_limit_reached",  # OpenAI
        "billing_error",  # Anthropic error type
        "enforced_spend_limit_reached",  # Anthropic EnforcedSpendLimitReachedError (429)
        "contract_spend_limit_reached",  # Anthropic ContractSpendLimitReachedError (429)
        "linked_organization_spend_limit_reached",  # Anthropic (402)
    }
)
#: Error types of an error body without an error status (a mid-stream ``error`` event) that are
#: worth retrying: overload and server errors (Anthropic's and OpenAI's type names).
RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "api_error", "server_error", "timeout_error", "rate_limit_error"}
)

_UPSTREAM_4XX = frozenset({408, 429})


def is_idempotent(method: str, headers: HeadersLike | Any = None) -> bool:
    """Whether a request may be sent again: an idempotent method (GET, HEAD, OPTIONS, TRACE,
    PUT, DELETE; any case), or an ``Idempotency-Key`` header (any case, any value) in the
    request's ``headers`` (a mapping, multi-dict or list of pairs)."""
    if isinstance(method, str) and method.upper() in IDEMPOTENT_METHODS:
        return True
    return "idempotency-key" in index_headers(headers)


def is_retryable_status(status: int, *, idempotent: bool = True) -> bool:
    """Whether an error status is worth retrying, by the status alone.

    429 and 529 for every request (:data:`NOT_PROCESSED_STATUSES`); 408, 409, 425 and every
    5xx only when the request is ``idempotent``; never another status.
    """
    if status in NOT_PROCESSED_STATUSES:
        return True
    return idempotent and (status in RETRYABLE_STATUSES or 500 <= status <= 599)


@dataclass(frozen=True, slots=True)
class Classification:
    """What to do about one outcome (see :func:`classify` and the module's table).

    Attributes:
        retryable: whether another attempt is worth making.
        fault: ``"caller"``, ``"upstream"``, or ``None`` when the outcome is no failure.
        processed: ``False`` only when the upstream provably did not process the request (429,
            529, a connect failure: nothing was billed, and resending is safe for any method);
            ``True`` when it may have.
        wait: the server's wait hint (:func:`wait_hint`); ``None`` unless ``retryable``.
        reason: a short human-readable reason (``"status 429"``, ``"billing:
            insufficient_quota"``, ``"x-should-retry: false"``, ``"transport: connect"``, ...).
    """

    retryable: bool
    fault: Fault | None
    processed: bool
    wait: WaitHint | None = None
    reason: str = ""

    @property
    def retry_after(self) -> float | None:
        """``wait.seconds``, or ``None`` without a hint."""
        return None if self.wait is None else self.wait.seconds

    @property
    def billed(self) -> bool:
        """Whether the attempt may have been billed (the same as ``processed``)."""
        return self.processed


_TRANSPORT: Mapping[str, tuple[bool, Fault, bool]] = {
    # kind: (retryable, fault, processed)
    "connect": (True, "upstream", False),
    "timeout": (True, "upstream", True),
    "network": (True, "upstream", True),
    "tls": (False, "upstream", False),
    "invalid": (False, "caller", False),
}


def _billing(o: Outcome) -> str | None:
    if o.error_code in BILLING_ERRORS:
        return o.error_code
    if o.error_type in BILLING_ERRORS:
        return o.error_type
    return None


def _decide(o: Outcome) -> tuple[bool, Fault | None, bool, str]:
    """``(retryable, fault, processed, reason)`` before the overrides."""
    if o.transport is not None:
        retryable, kind_fault, processed = _TRANSPORT[o.transport]
        return retryable, kind_fault, processed, f"transport: {o.transport}"
    status = o.status if o.status is not None and o.status >= 400 else None
    billing = _billing(o)
    if status is not None:
        processed = status not in NOT_PROCESSED_STATUSES
        if billing is not None:
            return False, "caller", processed, f"billing: {billing}"
        retryable = status in RETRYABLE_STATUSES or status >= 500
        fault: Fault = "upstream" if status in _UPSTREAM_4XX or status >= 500 else "caller"
        return retryable, fault, processed, f"status {status}"
    if billing is not None:
        return False, "caller", True, f"billing: {billing}"
    if o.error_type is not None or o.error_code is not None:
        what = o.error_type or o.error_code
        return o.error_type in RETRYABLE_ERROR_TYPES, "upstream", True, f"error: {what}"
    return False, None, True, "success"


def classify(
    obj: object,
    *,
    idempotent: bool = True,
    now: float | None = None,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
) -> Classification | None:
    """Classify an exception, a response or an :class:`Outcome` (see the module's table).

    Args:
        obj: anything :func:`outcome_of` reads: an exception from any HTTP client or AI SDK, a
            response object, or an :class:`Outcome`.
        idempotent: whether the request may be sent again (see :func:`is_idempotent`); when
            false, an outcome that may have been processed is not retryable.
        now: the local Unix time for date-valued hints (default: now).
        max_delay: the cap of the wait hint in seconds (finite, >= 0).

    Returns ``None`` when ``obj`` carries nothing about HTTP (an exception without a status,
    error body or transport failure; ``asyncio.CancelledError``): the caller applies its own
    rules. A response below 400 without an error body is no failure: ``retryable=False``,
    ``fault=None``. Never raises on malformed input; ``ValueError``/``TypeError`` for a bad
    ``max_delay``.
    """
    max_delay = check_max_delay(max_delay)
    o = outcome_of(obj)
    if o is None:
        return None
    retryable, fault, processed, reason = _decide(o)
    if fault is None:
        return Classification(False, None, processed, None, reason)
    index = index_headers(o.headers)
    if retryable and processed and not idempotent:
        retryable, reason = False, f"{reason}; not idempotent"
    should = first(index, "x-should-retry")
    if should is not None:
        flag = should.strip().lower()
        if flag in ("true", "false"):
            retryable, reason = flag == "true", f"x-should-retry: {flag}"
    hint = wait_hint_of_index(index, max_delay=max_delay, now=now) if retryable else None
    return Classification(retryable, fault, processed, hint, reason)
