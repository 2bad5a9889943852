"""The values telemetry reports about failures: ``error.type`` and the call's outcome.

Both are low-cardinality by construction: an exception becomes a status code or a class name,
never its message; a call ends in one of the ``names.OUTCOME_*`` values.
"""

from __future__ import annotations

from resilience._context import GiveUpReason
from resilience.errors import CircuitOpen, RateLimited
from resilience.telemetry import names

__all__ = ["call_outcome", "error_type"]


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value the library reports for ``exc`` (low cardinality).

    - an exception with an ``int`` attribute ``status`` between 400 and 599 (an HTTP error,
      e.g. ``aiohttp.ClientResponseError``): that status as a string, e.g. ``"503"``;
    - the library's own exceptions: their public name, e.g. ``"resilience.CircuitOpen"``;
    - builtins: the bare class name, e.g. ``"TimeoutError"``;
    - anything else: the module-qualified class name, e.g.
      ``"aiohttp.client_exceptions.ServerDisconnectedError"``.
    """
    status = getattr(exc, "status", None)
    if type(status) is int and 400 <= status <= 599:
        return str(status)
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module == "resilience.errors":
        return "resilience." + cls.__qualname__
    return f"{module}.{cls.__qualname__}"


#: ``resilience.outcome`` of a call whose error escaped after a retrier gave up, by reason.
GAVE_UP_OUTCOME: dict[str, str] = {
    GiveUpReason.ATTEMPTS: names.OUTCOME_EXHAUSTED,
    GiveUpReason.DEADLINE: names.OUTCOME_DEADLINE_EXCEEDED,
    GiveUpReason.BUDGET: names.OUTCOME_BUDGET_EXHAUSTED,
    GiveUpReason.CIRCUIT_OPEN: names.OUTCOME_CIRCUIT_OPEN,
    GiveUpReason.NOT_RETRYABLE: names.OUTCOME_NON_RETRYABLE,
}


def call_outcome(exc: BaseException, gave_up: GiveUpReason | None) -> str:
    """The ``resilience.outcome`` of a call that raised ``exc``.

    The library's rejections name themselves (``circuit_open``, ``rate_limited``); otherwise
    the reason the retrier gave up (``gave_up``, see :class:`resilience.telemetry.GiveUpReason`)
    decides, and ``failure`` when no retrier gave up (an error no retrier saw).
    """
    if isinstance(exc, CircuitOpen):
        return names.OUTCOME_CIRCUIT_OPEN
    if isinstance(exc, RateLimited):
        return names.OUTCOME_RATE_LIMITED
    if gave_up is None:
        return names.OUTCOME_FAILURE
    return GAVE_UP_OUTCOME.get(gave_up, names.OUTCOME_EXHAUSTED)
