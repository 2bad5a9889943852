"""The shared option checks (``resilience.policies._validate``), directly: every bad value
raises ``TypeError`` (wrong kind) or ``ValueError`` (out of range) whose message starts with
the parameter's name."""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitBreaker, MemoryStore, Retry, SlidingWindowLimiter, all_of, backoff
from resilience.policies import _validate as v

SURROGATE = "tenant-\udcff"


def _raises(error: type[Exception], param: str, check: Callable[[], object]) -> str:
    """Run ``check``; it must raise ``error`` with a message starting with ``param``."""
    with pytest.raises(error) as info:
        check()
    message = str(info.value)
    assert message.startswith(param + " "), message
    return message


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        (False, TypeError),
        (1.0, TypeError),
        ("3", TypeError),
        (None, TypeError),
        (0, ValueError),
        (-1, ValueError),
    ],
)
def test_positive_int_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "attempts", lambda: v.positive_int("attempts", value))


def test_positive_int_accepts() -> None:
    assert v.positive_int("attempts", 1) == 1
    assert v.positive_int("attempts", 2**70) == 2**70


BAD_NUMBERS: list[tuple[object, type[Exception]]] = [
    (True, TypeError),
    (False, TypeError),
    ("1", TypeError),
    (None, TypeError),
    (1j, TypeError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (10**400, ValueError),  # too large for a float: not an OverflowError
    (-(10**400), ValueError),
]


@pytest.mark.parametrize(("value", "error"), BAD_NUMBERS)
def test_finite_number_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "multiplier", lambda: v.finite_number("multiplier", value))


def test_finite_number_accepts_ints_and_floats() -> None:
    assert v.finite_number("x", 3) == 3.0
    assert isinstance(v.finite_number("x", 3), float)
    assert v.finite_number("x", -0.5) == -0.5


@pytest.mark.parametrize(("value", "error"), [*BAD_NUMBERS, (0.999, ValueError), (-1, ValueError)])
def test_at_least_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "multiplier", lambda: v.at_least("multiplier", value, 1))


def test_at_least_describes_its_bound_and_unit() -> None:
    msg = _raises(ValueError, "max", lambda: v.at_least("max", 0.5, 1.0, bound="initial (1.0)"))
    assert msg == "max must be >= initial (1.0), got 0.5"
    msg = _raises(ValueError, "delay", lambda: v.at_least("delay", -1, 0, unit=" seconds"))
    assert msg == "delay must be >= 0 seconds, got -1"
    assert v.at_least("delay", 0, 0) == 0.0


@pytest.mark.parametrize(("value", "error"), [*BAD_NUMBERS, (0, ValueError), (-0.1, ValueError)])
def test_positive_number_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "initial", lambda: v.positive_number("initial", value, unit=" seconds"))


# ---------------------------------------------------------------- durations

BAD_SECONDS: list[tuple[object, type[Exception]]] = [
    (True, TypeError),
    ("1", TypeError),
    (None, TypeError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (-1, ValueError),
    (-1e-9, ValueError),
    (v.MAX_SECONDS * 1.01, ValueError),
    (10**400, ValueError),
]


@pytest.mark.parametrize(("value", "error"), BAD_SECONDS)
def test_non_negative_seconds_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "state_refresh", lambda: v.non_negative_seconds("state_refresh", value))


def test_non_negative_seconds_accepts_its_bounds() -> None:
    assert v.non_negative_seconds("guard", 0) == 0.0
    assert v.non_negative_seconds("guard", v.MAX_SECONDS) == v.MAX_SECONDS


@pytest.mark.parametrize(("value", "error"), [*BAD_SECONDS, (0, ValueError), (0.0, ValueError)])
def test_positive_seconds_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "deadline", lambda: v.positive_seconds("deadline", value))


@pytest.mark.parametrize(
    ("value", "error"),
    [*BAD_SECONDS, (0, ValueError), (1e-7, ValueError), (0.000999, ValueError)],
)
def test_min_duration_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "probe_lease", lambda: v.min_duration("probe_lease", value, 0.001))


def test_min_duration_names_the_minimum_and_why() -> None:
    msg = _raises(
        ValueError, "window", lambda: v.min_duration("window", 1e-4, 0.001, "stores count µs")
    )
    assert msg == "window must be at least 0.001 seconds (stores count µs), got 0.0001"
    msg = _raises(ValueError, "window", lambda: v.min_duration("window", 1e-7, 1e-6))
    assert msg == "window must be at least 1e-06 seconds, got 1e-07"
    assert v.min_duration("window", 0.001, 0.001) == 0.001
    assert v.min_duration("window", 1, 0.001) == 1.0


# ---------------------------------------------------------------- exception matchers


class Upstream(Exception):
    pass


@pytest.mark.parametrize(
    "value",
    [42, "ValueError", b"x", int, object, (), [], set(), (ValueError, int), [ValueError, "x"]],
)
def test_exception_matcher_refuses(value: object) -> None:
    _raises(TypeError, "retry_on", lambda: v.check_exception_matcher("retry_on", value))
    _raises(TypeError, "retry_on", lambda: v.exception_types("retry_on", value))


def test_exception_matcher_none_is_the_policy_default() -> None:
    assert v.check_exception_matcher("failure_on", None) is None


def test_exception_matcher_compiles_types_and_keeps_predicates() -> None:
    one = v.check_exception_matcher("failure_on", Upstream)
    assert one is not None
    assert one(Upstream())
    assert not one(ValueError())
    for container in ((Upstream, KeyError), [Upstream, KeyError], frozenset({Upstream, KeyError})):
        many = v.check_exception_matcher("failure_on", container)
        assert many is not None
        assert many(Upstream())
        assert many(KeyError())
        assert not many(ValueError())

    def predicate(exc: BaseException) -> bool:
        return "x" in str(exc)

    assert v.check_exception_matcher("failure_on", predicate) is predicate
    assert v.exception_types("retry_on", predicate) is None
    assert v.exception_types("retry_on", [Upstream]) == (Upstream,)
    # BaseException types are accepted here; a policy decides what they mean.
    assert v.exception_types("failure_on", KeyboardInterrupt) == (KeyboardInterrupt,)


# ---------------------------------------------------------------- callables, types, choices


@pytest.mark.parametrize("value", [None, 1, "f", b"f", [print]])
def test_check_callable_refuses(value: object) -> None:
    msg = _raises(
        TypeError,
        "failure_if_result",
        lambda: v.check_callable("failure_if_result", value, "a predicate over the result"),
    )
    assert "a predicate over the result" in msg


def test_check_callables() -> None:
    assert v.check_callables("listeners", (print, len)) == [print, len]
    assert v.check_callables("listeners", iter([print])) == [print]
    for bad in ("ab", b"ab", 3, None):
        _raises(TypeError, "listeners", functools.partial(v.check_callables, "listeners", bad))
    msg = _raises(TypeError, "listeners[1]", lambda: v.check_callables("listeners", [print, 1]))
    assert msg == "listeners[1] must be callable, got int"


def test_check_instance() -> None:
    rng = random.Random(1)
    assert v.check_instance("rng", rng, random.Random) is rng
    msg = _raises(TypeError, "rng", lambda: v.check_instance("rng", 1, random.Random))
    assert msg == "rng must be a Random, got int"
    msg = _raises(
        TypeError, "rng", lambda: v.check_instance("rng", True, random.Random, "random.Random")
    )
    assert msg == "rng must be a random.Random, got bool"


def test_check_one_of() -> None:
    assert v.check_one_of("jitter", "full", ("full", "none")) == "full"
    for bad in ("FULL", None, 1, True):
        check = functools.partial(v.check_one_of, "jitter", bad, ("full", "none"))
        msg = _raises(ValueError, "jitter", check)
        assert "'full', 'none'" in msg


# ---------------------------------------------------------------- names, keys, stores


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (3, TypeError),
        (None, TypeError),
        (b"api", TypeError),
        ("", ValueError),
        (SURROGATE, ValueError),
    ],
)
def test_check_name_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "name", lambda: v.check_name(value))
    _raises(error, "budget", lambda: v.check_name(value, "budget"))


def test_check_name_accepts_any_text() -> None:
    for name in ("api", "ünïcode {tag}: x", "a" * 10_000):
        assert v.check_name(name) == name


@pytest.mark.parametrize(
    ("value", "error"), [(1, TypeError), (b"k", TypeError), (SURROGATE, ValueError)]
)
def test_check_key_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "key", lambda: v.check_key(value))


def test_check_key_accepts() -> None:
    assert v.check_key(None) is None
    assert v.check_key("host") == "host"
    assert v.check_key(str.upper) is str.upper


class _Str(str):
    pass


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, TypeError),
        (b"k", TypeError),
        (False, TypeError),
        (SURROGATE, ValueError),
        (_Str(SURROGATE), ValueError),
    ],
)
def test_call_key_refuses(value: object, error: type[Exception]) -> None:
    _raises(error, "key returned", lambda: v.call_key(value, "key returned by the key callable"))


def test_call_key_accepts() -> None:
    assert v.call_key(None) == ""
    assert v.call_key("é") == "é"
    k = v.call_key(_Str("host"))
    assert k == "host"
    assert type(k) is str


def test_check_store() -> None:
    store = MemoryStore()
    assert v.check_store(store, "breaker_acquire") is store
    assert isinstance(v.check_store(None, "breaker_acquire"), MemoryStore)
    msg = _raises(TypeError, "store", lambda: v.check_store(object(), "breaker_acquire"))
    assert re.search(r"Store protocol, got object$", msg)


def test_every_check_is_exported() -> None:
    for name in v.__all__:
        assert hasattr(v, name), name
    checks = [n for n in v.__all__ if callable(getattr(v, n)) and not n[0].isupper()]
    assert checks
    assert all(getattr(v, n).__doc__ for n in checks)


# ---------------------------------------------------------------- through the policies


def test_backoff_options_too_large_for_a_float_name_the_parameter() -> None:
    """An int too large for a float used to escape as a bare OverflowError."""
    _raises(ValueError, "initial", lambda: backoff.exponential(initial=10**400))
    _raises(ValueError, "max", lambda: backoff.exponential(max=10**400))
    _raises(ValueError, "multiplier", lambda: backoff.exponential(multiplier=-(10**400)))
    _raises(ValueError, "delay", lambda: backoff.constant(10**400))


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"failure_on": [ValueError, "x"]}, TypeError, "failure_on"),
        ({"failure_on": ()}, TypeError, "failure_on"),
        ({"failure_on": int}, TypeError, "failure_on"),
        ({"failure_if_result": 1}, TypeError, "failure_if_result"),
        ({"listeners": [print, 1]}, TypeError, "listeners[1]"),
        ({"window": math.nan}, ValueError, "window"),
        ({"probe_lease": 1e-4}, ValueError, "probe_lease"),
        ({"state_refresh": True}, TypeError, "state_refresh"),
    ],
)
def test_breaker_options_report_like_the_shared_checks(
    kwargs: dict[str, object], error: type[Exception], param: str
) -> None:
    _raises(error, param, lambda: CircuitBreaker(store=MemoryStore(), **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "error"), [(math.nan, ValueError), (-1, ValueError), ("1", TypeError)]
)
def test_the_same_bad_window_reads_the_same_in_every_policy(
    bad: Any, error: type[Exception]
) -> None:
    store = MemoryStore()
    breaker = _raises(error, "window", lambda: CircuitBreaker(window=bad, store=store))
    limiter = _raises(error, "window", lambda: SlidingWindowLimiter(1, bad, store=store))
    assert breaker == limiter


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"retry_on": ()}, TypeError, "retry_on must be an exception type, a non-empty tuple"),
        ({"retry_on": [ValueError, "x"]}, TypeError, "retry_on must contain exception types"),
        ({"retry_on": 3}, TypeError, "retry_on must be an exception type"),
        ({"retry_on": (KeyboardInterrupt,)}, ValueError, "retry_on must not contain"),
        ({"backoff": 1.5}, TypeError, "backoff must be a strategy from resilience.backoff"),
        ({"retry_if_result": 1}, TypeError, "retry_if_result must be a predicate over the"),
        ({"budget": object()}, TypeError, "budget must be a RetryBudget, got object"),
    ],
)
def test_retry_options_report_like_the_shared_checks(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    msg = _raises(error, message.split()[0], lambda: Retry(**kwargs))  # type: ignore[arg-type]
    assert msg.startswith(message), msg


def test_retry_on_takes_exception_types_as_failure_on_does() -> None:
    # The shared matcher: a list or a set of types works as a tuple does.
    for types in ([KeyError, ValueError], {KeyError, ValueError}):
        retryable = Retry(retry_on=types)._retryable  # type: ignore[arg-type]
        assert retryable(KeyError())
        assert not retryable(TypeError())


def test_limiter_options_report_like_the_shared_checks() -> None:
    store = MemoryStore()
    lim = SlidingWindowLimiter(1, 1, store=store, name="a")
    msg = _raises(TypeError, "limiters[1]", lambda: all_of(lim, 3))  # type: ignore[arg-type]
    assert msg == "limiters[1] must be a SlidingWindowLimiter, got int"
    msg = _raises(ValueError, "window", lambda: SlidingWindowLimiter(1, 1e-7, store=store))
    assert msg == "window must be at least 1e-06 seconds, got 1e-07"
