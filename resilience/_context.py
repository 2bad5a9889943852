"""What the pipeline, the policies and telemetry share about one call: a leaf module.

:class:`CallContext` (what policies know about one logical call) and :class:`GiveUpReason` (why
a retrier gave up) are imported by :mod:`resilience.pipeline`, the policies and
:mod:`resilience.telemetry` alike. They live here, in a module that imports nothing from
``resilience``, so that telemetry does not depend on the pipeline (the pipeline depends on
telemetry: it opens the call span) and no import cycle can form between them.

The public names are :class:`resilience.CallContext` (also ``resilience.pipeline.CallContext``)
and ``resilience.telemetry.GiveUpReason``.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

__all__ = ["CallContext", "GiveUpReason"]


class CallContext:
    """What policies know about one logical call (all its attempts).

    Attributes:
        operation: the operation's name (the decorated function's qualified name by default).
        args, kwargs: the arguments of the protected call (used to compute per-call keys).
        deadline: ``time.monotonic()`` value after which no attempt starts and no wait runs, or
            ``None``. Set by :class:`resilience.Retry` when it has a deadline; inner policies
            (the limiter's wait) honour it.
        attempt: 1-based number of the attempt in progress (0 before the first).
        span: the telemetry span of the call, if any (opaque to policies).
        observed: whether the call may record telemetry. :class:`resilience.Pipeline` decides
            it once, when the call starts: ``False`` when no OpenTelemetry SDK is configured
            then, and the policies skip their telemetry hooks for the whole call (a provider
            installed meanwhile takes effect for calls that start afterwards, as
            :func:`resilience.telemetry.configure` does). ``True`` by default: each hook asks
            telemetry itself.
    """

    __slots__ = ("args", "attempt", "deadline", "kwargs", "observed", "operation", "span")

    def __init__(
        self,
        operation: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> None:
        self.operation = operation
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.deadline = deadline
        self.attempt = 0
        self.span: Any = None
        self.observed = True

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or ``None`` without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


class GiveUpReason(str, Enum):
    """Why a retrier stopped retrying and let the last failure through.

    A ``str`` enum: each member equals its value (``GiveUpReason.BUDGET == "budget"``), which is
    what logs (the ``reason`` extra) and :func:`resilience.telemetry.retry_exhausted` receive.
    Telemetry maps each member to the call's ``resilience.outcome``.
    """

    #: Every attempt allowed was used (``resilience.outcome`` = ``exhausted``).
    ATTEMPTS = "attempts"
    #: The next delay would end at or past the call's deadline (``deadline_exceeded``).
    DEADLINE = "deadline"
    #: The retry budget refused the retry (``budget_exhausted``).
    BUDGET = "budget"
    #: A :class:`resilience.CircuitOpen` stays open longer than the backoff allows
    #: (``circuit_open``).
    CIRCUIT_OPEN = "circuit_open"
    #: The error is not retryable, after earlier attempts were retried (``non_retryable``).
    NOT_RETRYABLE = "not_retryable"

    # The value, as with 3.11's StrEnum, under str(), %s and f-strings alike.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)
