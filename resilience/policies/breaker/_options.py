"""The breaker's settings, validated once at construction, and the public types they name.

:func:`breaker_options` checks every constructor argument of
:class:`resilience.CircuitBreaker` (with :mod:`resilience.policies._validate`, so each error
names its parameter) and returns them as one immutable :class:`BreakerOptions`, including the
:class:`resilience.stores.base.BreakerSpec` the store receives. Nothing here runs per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from resilience.http import classify
from resilience.pipeline import KeySpec
from resilience.policies._validate import (
    ExceptionPredicate,
    check_callable,
    check_callables,
    check_exception_matcher,
    check_key,
    check_name,
    check_store,
    min_duration,
    non_negative_seconds,
    positive_int,
)
from resilience.stores import FallbackMode, FallbackStore, with_fallback
from resilience.stores.base import BreakerSpec, Store

__all__ = [
    "DEFAULT_STATE_REFRESH",
    "MIN_DURATION",
    "BreakerOptions",
    "BreakerState",
    "FailurePredicate",
    "ResultPredicate",
    "StateChange",
    "StateListener",
    "breaker_duration",
    "breaker_options",
    "default_failure",
]

#: ``state_refresh`` of a breaker on a shared store when none is given (seconds).
DEFAULT_STATE_REFRESH = 1.0

#: The shortest duration a breaker accepts (seconds): 1 ms. Stores count whole microseconds
#: and Redis expires keys in milliseconds; anything shorter would round towards 0 and
#: disable what it bounds (e.g. a probe lease of 0 lets every caller probe).
MIN_DURATION = 0.001

BreakerState = Literal["closed", "open", "half_open"]
#: A predicate over an exception: ``True`` means the exception counts as a failure.
FailurePredicate = Callable[[BaseException], bool]
#: A predicate over a returned value: ``True`` means the result counts as a failure.
ResultPredicate = Callable[[Any], bool]


class StateChange(NamedTuple):
    """One breaker transition, as listeners receive it.

    Attributes:
        breaker: the breaker's name.
        key: the key whose breaker changed state (``""`` for the default key).
        old: the state before.
        new: the state after.
    """

    breaker: str
    key: str
    old: BreakerState
    new: BreakerState


#: A listener: called with each :class:`StateChange` this process performed. It may be a
#: plain function or an ``async def`` (its coroutine is awaited before the call proceeds).
StateListener = Callable[[StateChange], object]


def default_failure(exc: Exception) -> bool:
    """The default ``failure_on``: whether an exception counts as a failure.

    An exception that carries an HTTP outcome (any client's or AI SDK's status error,
    transport error or error event; see :func:`resilience.http.classify`) counts only when it
    is the upstream's fault: 408, 429, 5xx, 529, transport failures. The caller's faults (400,
    401, 403, 404, 413, 422, a 429 about billing) are not failures: the upstream answered.
    Every other exception counts.
    """
    c = classify(exc)
    return True if c is None else c.fault == "upstream"


def breaker_duration(param: str, value: object) -> float:
    """A breaker duration: finite, at most ``MAX_SECONDS`` and at least :data:`MIN_DURATION`."""
    return min_duration(
        param,
        value,
        MIN_DURATION,
        "stores count whole microseconds and expire keys in milliseconds",
    )


@dataclass(frozen=True, slots=True)
class BreakerOptions:
    """A breaker's validated settings (see :class:`resilience.CircuitBreaker` for each)."""

    failure_threshold: int
    window: float
    break_duration: float
    name: str
    half_open_max_calls: int
    success_threshold: int
    #: The store, wrapped in its fallback (a :class:`resilience.MemoryStore` as is).
    store: Store
    #: ``failure_on`` as a predicate; ``None``: :func:`default_failure`.
    failure_on: ExceptionPredicate | None
    failure_if_result: ResultPredicate | None
    key: KeySpec
    max_break_duration: float
    probe_lease: float
    state_refresh: float
    #: Whether the store decides in this process (a :class:`resilience.MemoryStore`): its
    #: replies cannot be lost to a cancellation, and it cannot lose state behind our back.
    local: bool
    listeners: tuple[StateListener, ...]
    #: What the store receives: the durations in whole microseconds.
    spec: BreakerSpec
    #: The fallback's decision counter, to tell its replies from the shared store's.
    fallback_stats: Any


def breaker_options(
    failure_threshold: int,
    window: float,
    break_duration: float,
    *,
    store: Store | None,
    name: str,
    half_open_max_calls: int,
    success_threshold: int,
    failure_on: object,
    failure_if_result: ResultPredicate | None,
    key: KeySpec,
    max_break_duration: float | None,
    probe_lease: float | None,
    state_refresh: float | None,
    listeners: Iterable[StateListener],
    fallback: FallbackMode,
) -> BreakerOptions:
    """Validate a breaker's constructor arguments, in the order of its signature: the first
    bad one raises ``TypeError``/``ValueError`` naming it."""
    threshold = positive_int("failure_threshold", failure_threshold)
    window_s = breaker_duration("window", window)
    break_s = breaker_duration("break_duration", break_duration)
    checked_name = check_name(name)
    max_calls = positive_int("half_open_max_calls", half_open_max_calls)
    successes = positive_int("success_threshold", success_threshold)
    wrapped: Store = with_fallback(check_store(store, "breaker_acquire"), fallback)
    matcher = check_exception_matcher("failure_on", failure_on)
    if failure_if_result is not None:
        check_callable("failure_if_result", failure_if_result, "a predicate over the result")
    check_key(key)
    if max_break_duration is None:
        max_break_s = break_s
    else:
        max_break_s = breaker_duration("max_break_duration", max_break_duration)
        if max_break_s < break_s:
            raise ValueError(
                f"max_break_duration must be >= break_duration ({break_s}), "
                f"got {max_break_duration}"
            )
    lease = break_s if probe_lease is None else breaker_duration("probe_lease", probe_lease)
    local = bool(getattr(wrapped, "decides_locally", False))
    if state_refresh is None:
        refresh = 0.0 if local else DEFAULT_STATE_REFRESH
    else:
        refresh = non_negative_seconds("state_refresh", state_refresh)
    return BreakerOptions(
        failure_threshold=threshold,
        window=window_s,
        break_duration=break_s,
        name=checked_name,
        half_open_max_calls=max_calls,
        success_threshold=successes,
        store=wrapped,
        failure_on=matcher,
        failure_if_result=failure_if_result,
        key=key,
        max_break_duration=max_break_s,
        probe_lease=lease,
        state_refresh=refresh,
        local=local,
        listeners=tuple(check_callables("listeners", listeners)),
        spec=BreakerSpec(
            name=checked_name,
            failure_threshold=threshold,
            window_us=round(window_s * 1e6),
            break_us=round(break_s * 1e6),
            max_break_us=round(max_break_s * 1e6),
            half_open_max_calls=max_calls,
            success_threshold=successes,
            probe_lease_us=round(lease * 1e6),
        ),
        fallback_stats=wrapped.stats if isinstance(wrapped, FallbackStore) else None,
    )
