"""Retry-After and RateLimit parsing: every form of research RT-3..RT-5, and fuzzing."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from resilience.aiohttp import (
    DEFAULT_MAX_RETRY_AFTER,
    parse_ratelimit,
    parse_retry_after,
    retry_after_hint,
    wait_hint,
)

NOW = 1_700_000_000.0


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


# RT-3 ------------------------------------------------------------------------------------------


def test_delay_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0


def test_http_date_relative_to_the_response_date() -> None:
    # The server's clock is 1000 s behind ours: relative to its Date header, the hint is 90 s.
    server_now = NOW - 1000
    v = parse_retry_after(http_date(server_now + 90), date=http_date(server_now), now=NOW)
    assert v is not None
    assert abs(v - 90) <= 1


def test_http_date_relative_to_local_clock_without_date() -> None:
    v = parse_retry_after(http_date(NOW + 90), now=NOW)
    assert v is not None
    assert abs(v - 90) <= 1


def test_other_date_formats() -> None:
    # RFC 850 and asctime (naive, taken as UTC) must both be accepted (RFC 9110 §5.6.7).
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", date=http_date(784111717)) == 60.0
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", date=http_date(784111717)) == 60.0


def test_past_date_means_zero() -> None:
    assert parse_retry_after(http_date(NOW - 3600), now=NOW) == 0.0


def test_malformed_values_are_ignored() -> None:
    for bad in ("-5", "1.5", "abc", "", "  ", "1e3", "²", "+3", "0x10", "3 s"):
        assert parse_retry_after(bad, now=NOW) is None, bad
    assert parse_retry_after(None) is None


def test_huge_values_are_capped() -> None:
    assert parse_retry_after("999999") == DEFAULT_MAX_RETRY_AFTER
    assert parse_retry_after("999999", max_delay=60) == 60.0
    assert parse_retry_after("9" * 5000) == DEFAULT_MAX_RETRY_AFTER  # no int() digit-limit error
    assert parse_retry_after(http_date(NOW + 10**8), now=NOW) == DEFAULT_MAX_RETRY_AFTER


# RT-4 / RT-5 -----------------------------------------------------------------------------------


def test_retry_after_takes_precedence_over_ratelimit() -> None:
    h = CIMultiDict({"Retry-After": "30", "RateLimit": '"d";r=0;t=5'})
    assert retry_after_hint(h) == 30.0


def test_ratelimit_alone() -> None:
    assert retry_after_hint({"RateLimit": '"d";r=0;t=7'}) == 7.0
    # Several items, several field lines: the largest t among exhausted quotas.
    h = CIMultiDict(
        [("RateLimit", '"burst";r=0;t=3'), ("RateLimit", '"day";r=0;t=40, "x";r=5;t=9')]
    )
    assert retry_after_hint(h) == 40.0
    # Remaining quota: no hint.
    assert retry_after_hint({"RateLimit": '"d";r=3;t=7'}) is None


def test_malformed_ratelimit_is_ignored() -> None:
    for bad in ("d;r=x", '"d";r=0;t=x', '"d";r=-1;t=3', '"d";t=3', '"d";r=0;t=1.5', '"d";r=0;t=3,'):
        assert retry_after_hint({"RateLimit": bad}) is None, bad


def test_legacy_fields() -> None:
    assert retry_after_hint({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"}) == 12.0
    assert retry_after_hint({"RateLimit-Remaining": "0", "RateLimit-Reset": "4"}) == 4.0
    assert retry_after_hint({"RateLimit-Reset": "4"}) == 4.0
    # Not exhausted: no hint.
    assert retry_after_hint({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "12"}) is None
    # GitHub's form: a Unix timestamp, relative to Date.
    h = {
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(NOW) + 42),
        "Date": http_date(NOW),
    }
    assert retry_after_hint(h) == 42.0
    assert parse_ratelimit({"X-RateLimit-Reset": "5"}, legacy=False) is None


def test_header_names_are_case_insensitive_in_plain_dicts() -> None:
    assert retry_after_hint({"retry-after": "3"}) == 3.0
    assert retry_after_hint({"ratelimit": '"d";r=0;t=2'}) == 2.0


# Fuzzing: arbitrary header strings never raise; the result is None or within [0, max]. -------

_NAMES = st.sampled_from(
    [
        "Retry-After",
        "Date",
        "RateLimit",
        "RateLimit-Policy",
        "RateLimit-Reset",
        "RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-RateLimit-Remaining",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r'"?[a-z]{0,3}"?(;[rtqw]=-?[0-9x.]{0,12}){0,3}(, ?)?', fullmatch=True),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True).map(str),
    st.integers(min_value=-(10**11), max_value=10**12).map(
        lambda t: formatdate(t, usegmt=True) if 0 <= t < 253402300799 else str(t)
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
    max_delay=st.floats(min_value=0, max_value=1e6),
)
def test_arbitrary_headers_never_raise(headers: list[tuple[str, str]], max_delay: float) -> None:
    h = CIMultiDict(headers)
    v = retry_after_hint(h, max_delay=max_delay, now=NOW)
    assert v is None or 0 <= v <= max_delay
    w = wait_hint(h, max_delay=max_delay, now=NOW)
    assert (None if w is None else w[0]) == v
    assert w is None or w[1] in ("retry_after", "rate_limit_header")
    r = parse_retry_after(h.get("Retry-After"), date=h.get("Date"), now=NOW, max_delay=max_delay)
    assert r is None or 0 <= r <= max_delay


def test_wait_hint_tells_where_the_hint_came_from() -> None:
    assert wait_hint({"Retry-After": "30", "RateLimit": '"d";r=0;t=5'}) == (30.0, "retry_after")
    assert wait_hint({"RateLimit": '"d";r=0;t=7'}) == (7.0, "rate_limit_header")
    assert wait_hint({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"}) == (
        12.0,
        "rate_limit_header",
    )
    assert wait_hint({"RateLimit-Reset": "4"}, max_delay=2) == (2.0, "rate_limit_header")
    assert wait_hint({"Retry-After": "soon", "RateLimit": '"d";r=0;t=3'}) == (
        3.0,
        "rate_limit_header",
    )
    assert wait_hint({"RateLimit": '"d";r=3;t=7'}) is None
    assert wait_hint({}) is None
