"""Backoff strategies: documented bounds (RT-1), spreading (RT-2), parameter validation."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import backoff
from resilience.backoff import Exponential

DRAWS = 10_000


def draws(strategy: Exponential, attempt: int, previous: float = 0.0) -> list[float]:
    return [strategy(attempt, previous) for _ in range(DRAWS)]


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12])
def test_full_jitter_bounds_and_mean_rt1(attempt: int) -> None:
    # RT-1: full jitter, base 0.1 s, cap 10 s: all in [0, min(cap, base*2^(n-1))], mean
    # within 2 % of half of that. Seeded: deterministic, and 10 000 draws put the mean's
    # standard error at 0.6 % of it, so 2 % is a real check, not luck.
    s = backoff.exponential(initial=0.1, multiplier=2.0, max=10.0, rng=random.Random(attempt))
    ceiling = min(10.0, 0.1 * 2 ** (attempt - 1))
    d = draws(s, attempt)
    assert min(d) >= 0.0
    assert max(d) <= ceiling
    assert statistics.fmean(d) == pytest.approx(ceiling / 2, rel=0.02)
    # really spread over the whole range, not clustered
    assert min(d) < 0.01 * ceiling
    assert max(d) > 0.99 * ceiling


@pytest.mark.parametrize("attempt", [1, 2, 4, 9])
def test_equal_jitter_bounds(attempt: int) -> None:
    s = backoff.exponential(0.5, 3.0, 30.0, "equal", rng=random.Random(attempt))
    v = min(30.0, 0.5 * 3.0 ** (attempt - 1))
    d = draws(s, attempt)
    assert min(d) >= v / 2
    assert max(d) <= v
    assert statistics.fmean(d) == pytest.approx(0.75 * v, rel=0.02)
    assert min(d) < 0.51 * v


@pytest.mark.parametrize("attempt", [1, 3, 10])
def test_no_jitter_is_exact(attempt: int) -> None:
    s = backoff.exponential(0.2, 2.0, 5.0, "none")
    assert set(draws(s, attempt)) == {min(5.0, 0.2 * 2 ** (attempt - 1))}


@pytest.mark.parametrize("previous", [0.0, 0.1, 0.3, 1.0, 4.0, 50.0])
def test_decorrelated_jitter_bounds(previous: float) -> None:
    initial, cap = 0.1, 10.0
    s = backoff.exponential(initial, max=cap, jitter="decorrelated", rng=random.Random(7))
    hi = min(cap, 3 * max(previous, initial))
    d = draws(s, 2, previous)
    assert min(d) >= initial
    assert max(d) <= hi
    if hi < cap:
        assert statistics.fmean(d) == pytest.approx((initial + hi) / 2, rel=0.02)
    else:  # capped: a share of the draws sits exactly on the cap
        assert d.count(cap) > 0


def test_decorrelated_chain_stays_within_initial_and_max() -> None:
    s = backoff.exponential(0.05, max=2.0, jitter="decorrelated", rng=random.Random(3))
    prev = 0.0
    seen = []
    for attempt in range(1, 2000):
        prev = s(attempt, prev)
        seen.append(prev)
    assert min(seen) >= 0.05
    assert max(seen) == 2.0  # it reaches the cap and stays within it


def test_full_jitter_spreads_100_clients_rt2() -> None:
    # RT-2 (on the strategy; the same with real Retry calls is in test_retry.py): 100 clients
    # failing at t=0 with base 1 s. Full jitter: no 100 ms bucket holds more than 25, and a
    # chi-square test does not reject uniformity over [0, 1 s] at p = 0.01 (critical value
    # for 9 degrees of freedom: 21.666). Without jitter all 100 land in one bucket.
    rng = random.Random(2024)
    s = backoff.exponential(1.0, jitter="full", rng=rng)
    firsts = [s(1, 0.0) for _ in range(100)]
    buckets = [0] * 10
    for t in firsts:
        buckets[min(int(t * 10), 9)] += 1
    assert max(buckets) <= 25
    chi2 = sum((b - 10) ** 2 / 10 for b in buckets)
    assert chi2 < 21.666
    none = backoff.exponential(1.0, jitter="none")
    assert len({none(1, 0.0) for _ in range(100)}) == 1


def test_constant() -> None:
    c = backoff.constant(0.25)
    assert c(1, 0.0) == c(7, 3.0) == 0.25
    assert c.max == math.inf
    assert backoff.constant(0)(1, 0.0) == 0.0


def test_overflow_is_capped() -> None:
    s = backoff.exponential(1.0, 10.0, 30.0, "none")
    assert s(10_000, 0.0) == 30.0


def test_repr_and_equality() -> None:
    assert backoff.exponential() == backoff.exponential(1.0, 2.0, 60.0, "full")
    assert "jitter='full'" in repr(backoff.exponential())
    assert backoff.constant(1) == backoff.constant(1.0)
    assert hash(backoff.constant(1)) == hash(backoff.constant(1.0))


# -- hypothesis: valid parameters give delays within bounds; invalid ones name the parameter


valid_initial = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False)
valid_mult = st.floats(min_value=1.0, max_value=100.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    initial=valid_initial,
    multiplier=valid_mult,
    extra=st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
    attempt=st.integers(min_value=1, max_value=10_000),
    previous=st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
)
def test_valid_parameters_give_bounded_delays(
    initial: float, multiplier: float, extra: float, jitter: str, attempt: int, previous: float
) -> None:
    cap = initial + extra
    s = backoff.exponential(initial, multiplier, cap, jitter)  # type: ignore[arg-type]
    d = s(attempt, previous)
    assert math.isfinite(d)
    assert 0.0 <= d <= cap
    if jitter == "decorrelated":
        assert d >= initial
    else:
        # the ceiling, computed independently (in logs, so it cannot overflow)
        grows_past = math.log(initial) + (attempt - 1) * math.log(multiplier) >= math.log(cap)
        v = cap if grows_past else min(cap, initial * multiplier ** (attempt - 1))
        assert d <= v * (1 + 1e-12)
        if jitter == "equal":
            assert d >= v / 2 * (1 - 1e-12)
        if jitter == "none":
            assert d == pytest.approx(v)


bad_number = st.one_of(
    st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.floats(max_value=-1e-9)
)


@settings(max_examples=100, deadline=None)
@given(value=bad_number)
def test_invalid_initial_names_it(value: float) -> None:
    with pytest.raises(ValueError, match="initial"):
        backoff.exponential(initial=value)


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(bad_number, st.floats(min_value=-10, max_value=0.999)))
def test_invalid_multiplier_names_it(value: float) -> None:
    with pytest.raises(ValueError, match="multiplier"):
        backoff.exponential(multiplier=value)


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(bad_number, st.floats(min_value=0, max_value=0.999)))
def test_invalid_max_names_it(value: float) -> None:
    with pytest.raises(ValueError, match="max"):
        backoff.exponential(initial=1.0, max=value)


@settings(max_examples=50, deadline=None)
@given(value=st.text(max_size=12).filter(lambda s: s not in {"full", "equal", "decorrelated"}))
def test_invalid_jitter_names_it(value: str) -> None:
    if value == "none":
        return
    with pytest.raises(ValueError, match="jitter"):
        backoff.exponential(jitter=value)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(value=bad_number)
def test_invalid_constant_names_delay(value: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        backoff.constant(value)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"initial": "1"}, "initial"),
        ({"multiplier": None}, "multiplier"),
        ({"max": True}, "max"),
        ({"rng": 3}, "rng"),
        ({"initial": 0}, "initial"),
    ],
)
def test_wrong_types_name_the_parameter(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises((TypeError, ValueError), match=param):
        backoff.exponential(**kwargs)  # type: ignore[arg-type]
