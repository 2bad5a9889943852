"""Telemetry: every span, event and metric the library emits goes through this module.

Policies call the functions below at fixed points; nothing else in the library touches
OpenTelemetry. (Stub: the OpenTelemetry implementation replaces the bodies, not the signatures.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    from resilience.pipeline import CallContext

T = TypeVar("T")

LimiterResult = Literal["admitted", "waited", "rejected"]
BreakerOutcome = Literal["success", "failure", "rejected", "ignored"]
DelaySource = Literal["backoff", "retry_after", "rate_limit_header"]


async def instrument_call(call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    """Run one logical call (all attempts) inside the call span."""
    return await call()


async def instrument_attempt(call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    """Run one attempt (``ctx.attempt``, 1-based; 0 is treated as 1) inside an attempt span."""
    return await call()


def retry_scheduled(
    ctx: CallContext | None,
    *,
    policy: str,
    attempt: int,
    delay: float,
    source: DelaySource,
    error: BaseException | None,
) -> None:
    """A retry was scheduled after ``attempt`` failed; the next one starts in ``delay`` s."""


def retry_exhausted(ctx: CallContext | None, *, policy: str, attempts: int, reason: str) -> None:
    """The retrier gave up (attempts, deadline, budget or a non-retryable error)."""


def limiter_decision(
    ctx: CallContext | None,
    *,
    limiter: str,
    result: LimiterResult,
    wait: float,
    duration: float,
) -> None:
    """A limiter admitted a call (after ``wait`` s of waiting) or rejected it.

    ``duration`` is the time spent in acquire, decision round trip and wait included.
    """


def breaker_state_change(
    ctx: CallContext | None, *, breaker: str, old: str, new: str
) -> None:
    """This process's script performed a breaker transition (emitted once fleet-wide)."""


def breaker_call(ctx: CallContext | None, *, breaker: str, outcome: BreakerOutcome) -> None:
    """A call passed through a breaker with this outcome."""


def store_degraded(*, store: str, degraded: bool, reason: str = "") -> None:
    """A store entered (``degraded=True``) or left degraded mode."""
