"""resilience.http wait hints and quotas: every header format, the order, and fuzzing."""

from __future__ import annotations

import math
from email.utils import formatdate

import httpx
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from resilience.http import (
    DEFAULT_MAX_RETRY_AFTER,
    Quota,
    WaitHint,
    parse_ratelimit,
    parse_retry_after,
    rate_limit_state,
    retry_after_hint,
    wait_hint,
)

NOW = 1_700_000_000.0


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def rfc3339(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Retry-After (moved from resilience.aiohttp.headers: the same contract) ----------------------


def test_delay_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0


def test_http_date_relative_to_the_response_date() -> None:
    server_now = NOW - 1000  # the server's clock is 1000 s behind ours
    v = parse_retry_after(http_date(server_now + 90), date=http_date(server_now), now=NOW)
    assert v is not None
    assert abs(v - 90) <= 1


def test_other_date_formats_and_past_dates() -> None:
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", date=http_date(784111717)) == 60.0
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", date=http_date(784111717)) == 60.0
    assert parse_retry_after(http_date(NOW - 3600), now=NOW) == 0.0


def test_malformed_retry_after_is_ignored() -> None:
    for bad in ("-5", "1.5", "abc", "", "  ", "1e3", "²", "+3", "0x10", "3 s", "nan", "inf"):
        assert parse_retry_after(bad, now=NOW) is None, bad
    assert parse_retry_after(None) is None


def test_huge_values_are_capped() -> None:
    assert parse_retry_after("999999") == DEFAULT_MAX_RETRY_AFTER
    assert parse_retry_after("999999", max_delay=60) == 60.0
    assert parse_retry_after("9" * 5000) == DEFAULT_MAX_RETRY_AFTER
    assert parse_retry_after(http_date(NOW + 10**8), now=NOW) == DEFAULT_MAX_RETRY_AFTER


# Every format, one row each: (headers, expected seconds, expected source) ---------------------

ROWS: list[tuple[str, dict[str, str], float | None, str | None]] = [
    ("retry-after-ms", {"retry-after-ms": "1500"}, 1.5, "retry_after"),
    ("retry-after-ms fraction", {"retry-after-ms": "250.5"}, 0.2505, "retry_after"),
    ("retry-after-ms zero", {"retry-after-ms": "0"}, 0.0, "retry_after"),
    ("retry-after seconds", {"Retry-After": "30"}, 30.0, "retry_after"),
    (
        "retry-after date",
        {"Retry-After": http_date(NOW + 42), "Date": http_date(NOW)},
        42.0,
        "retry_after",
    ),
    (
        "openai 1s",
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"},
        1.0,
        "rate_limit_header",
    ),
    (
        "openai 6m0s",
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"},
        360.0,
        "rate_limit_header",
    ),
    (
        "openai 250ms",
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "250ms"},
        0.25,
        "rate_limit_header",
    ),
    (
        "openai 1m30.5s",
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30.5s"},
        90.5,
        "rate_limit_header",
    ),
    ("openai 1h2m3s", {"x-ratelimit-reset-requests": "1h2m3s"}, 3723.0, "rate_limit_header"),
    (
        "openai remaining left",
        {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"},
        None,
        None,
    ),
    (
        "anthropic",
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": rfc3339(NOW + 12),
            "Date": http_date(NOW),
        },
        12.0,
        "rate_limit_header",
    ),
    (
        "anthropic local clock",
        {
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": rfc3339(NOW + 5),
        },
        5.0,
        "rate_limit_header",
    ),
    (
        "anthropic offset",
        {
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": "2023-11-14T23:13:40+01:00",
        },
        20.0,
        "rate_limit_header",
    ),
    (
        "anthropic past",
        {
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": rfc3339(NOW - 30),
        },
        0.0,
        "rate_limit_header",
    ),
    ("ietf", {"RateLimit": '"default";r=0;t=7'}, 7.0, "rate_limit_header"),
    ("ietf not exhausted", {"RateLimit": '"default";r=3;t=7'}, None, None),
    (
        "legacy x-ratelimit",
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"},
        12.0,
        "rate_limit_header",
    ),
    (
        "legacy github unix",
        {
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(NOW) + 42),
            "Date": http_date(NOW),
        },
        42.0,
        "rate_limit_header",
    ),
    ("legacy ratelimit-reset", {"RateLimit-Reset": "4"}, 4.0, "rate_limit_header"),
    ("nothing", {"Content-Type": "application/json"}, None, None),
]


@pytest.mark.parametrize(
    ("headers", "seconds", "source"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_each_format(headers: dict[str, str], seconds: float | None, source: str | None) -> None:
    hint = wait_hint(headers, now=NOW)
    if seconds is None:
        assert hint is None
    else:
        assert hint is not None
        assert hint.source == source
        assert hint.seconds == pytest.approx(seconds, abs=1e-9)


def test_rfc3339_offsets_and_fractions() -> None:
    h = {
        "anthropic-ratelimit-tokens-remaining": "0",
        # NOW + 20 s written in +01:00, with a fraction
        "anthropic-ratelimit-tokens-reset": "2023-11-14T23:13:40.5+01:00",
    }
    hint = wait_hint(h, now=NOW)
    assert hint is not None
    assert hint.seconds == pytest.approx(20.5)


# The order: each earlier field wins over every later one ------------------------------------

ORDER = [
    ("retry-after-ms", "1500", 1.5),
    ("Retry-After", "30", 30.0),
    ("x-ratelimit-reset-requests", "2s", 2.0),
    ("anthropic-ratelimit-requests-reset", rfc3339(NOW + 3), 3.0),
    ("RateLimit", '"d";r=0;t=4', 4.0),
    ("RateLimit-Reset", "5", 5.0),
    ("X-RateLimit-Reset", "6", 6.0),
]


@pytest.mark.parametrize("start", range(len(ORDER)))
def test_hint_order(start: int) -> None:
    headers = {name: value for name, value, _ in ORDER[start:]}
    hint = wait_hint(headers, now=NOW)
    assert hint is not None
    assert hint.seconds == ORDER[start][2]
    assert hint.source == ("retry_after" if start < 2 else "rate_limit_header")


def test_malformed_field_falls_through_to_the_next() -> None:
    h = {
        "retry-after-ms": "soon",
        "Retry-After": "-1",
        "x-ratelimit-reset-requests": "1 s",
        "RateLimit": '"d";r=0;t=9',
    }
    assert wait_hint(h, now=NOW) == WaitHint(9.0, "rate_limit_header")


def test_largest_reset_among_exhausted_quotas_of_one_family() -> None:
    h = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "20s",
    }
    assert wait_hint(h) == WaitHint(20.0, "rate_limit_header")
    h["x-ratelimit-remaining-tokens"] = "100"
    assert wait_hint(h) == WaitHint(1.0, "rate_limit_header")


def test_ratelimit_several_items_and_lines() -> None:
    h = CIMultiDict(
        [("RateLimit", '"burst";r=0;t=3'), ("RateLimit", '"day";r=0;t=40, "x";r=5;t=9')]
    )
    assert retry_after_hint(h) == 40.0


def test_malformed_ietf_field_is_ignored_as_a_whole() -> None:
    for bad in ("d;r=x", '"d";r=0;t=x', '"d";r=-1;t=3', '"d";t=3', '"d";r=0;t=1.5', '"d";r=0;t=3,'):
        assert retry_after_hint({"RateLimit": bad}) is None, bad


def test_legacy_can_be_turned_off() -> None:
    assert parse_ratelimit({"X-RateLimit-Reset": "5"}, legacy=False) is None
    assert wait_hint({"X-RateLimit-Reset": "5"}, legacy=False) is None
    assert parse_ratelimit({"X-RateLimit-Reset": "5"}) == 5.0
    # A malformed remaining count makes no claim.
    assert parse_ratelimit({"X-RateLimit-Remaining": "x", "X-RateLimit-Reset": "5"}) is None


def test_bad_durations_are_ignored() -> None:
    for bad in ("-1s", "1", "1x", "s", "1 s", "1.5.5s", "inf", "nan", "1e3s", ""):
        h = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": bad}
        assert wait_hint(h) is None, bad
    # "0" is Go's zero duration.
    assert wait_hint({"x-ratelimit-reset-requests": "0"}) == WaitHint(0.0, "rate_limit_header")


def test_bad_rfc3339_is_ignored() -> None:
    for bad in (
        "2025-01-01",
        "2025-01-01T00:00:00",
        "2025-13-01T00:00:00Z",
        "1700000000",
        "2025-01-01T00:00:00+25:00",
        "yesterday",
    ):
        h = {"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": bad}
        assert wait_hint(h, now=NOW) is None, bad


def test_caps_and_max_delay_validation() -> None:
    assert wait_hint({"retry-after-ms": "9" * 30}) == WaitHint(
        DEFAULT_MAX_RETRY_AFTER, "retry_after"
    )
    assert wait_hint({"x-ratelimit-reset-tokens": "99999h"}, max_delay=60) == WaitHint(
        60.0, "rate_limit_header"
    )
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match="max_delay"):
            wait_hint({}, max_delay=bad)
    with pytest.raises(TypeError, match="max_delay"):
        wait_hint({}, max_delay="60")  # type: ignore[arg-type]


# Any header container, names in any case ------------------------------------------------------

CONTAINERS = [
    ("dict", lambda pairs: dict(pairs)),
    ("pairs", lambda pairs: list(pairs)),
    ("bytes pairs", lambda pairs: [(k.encode(), v.encode()) for k, v in pairs]),
    ("multidict", lambda pairs: CIMultiDict(pairs)),
    ("httpx", lambda pairs: httpx.Headers(pairs)),
    ("httpx2", lambda pairs: httpx2.Headers(pairs)),
]


@pytest.mark.parametrize("make", [c[1] for c in CONTAINERS], ids=[c[0] for c in CONTAINERS])
def test_any_container_any_case(make) -> None:
    h = make([("RETRY-AFTER-MS", "1500"), ("Retry-After", "3")])
    assert wait_hint(h) == WaitHint(1.5, "retry_after")
    h = make(
        [
            ("X-RateLimit-Limit-Requests", "60"),
            ("X-RATELIMIT-REMAINING-REQUESTS", "0"),
            ("x-ratelimit-reset-requests", "2s"),
        ]
    )
    assert rate_limit_state(h).quota("requests") == Quota("requests", 60, 0, 2.0)


def test_repeated_retry_after_uses_the_first_value() -> None:
    assert wait_hint([("Retry-After", "3"), ("Retry-After", "90")]) == WaitHint(3.0, "retry_after")


def test_unreadable_headers_are_no_headers() -> None:
    class Broken:
        def items(self):
            raise RuntimeError("boom")

    for h in (None, "Retry-After: 3", b"x", 42, Broken(), [("only-one",)], [(1, 2)]):
        assert wait_hint(h) is None
        assert rate_limit_state(h).quotas == ()


# Quotas (for following the provider's limits) -------------------------------------------------


def test_openai_quotas() -> None:
    s = rate_limit_state(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert s.limits == {"requests": 500, "tokens": 30000}
    assert s.quota("requests") == Quota("requests", 500, 499, 0.12)
    assert s.exhausted == (Quota("tokens", 30000, 0, 360.0),)
    assert s.pause == 360.0


def test_anthropic_quotas() -> None:
    s = rate_limit_state(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": rfc3339(NOW + 1),
            "anthropic-ratelimit-tokens-limit": "90000",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": rfc3339(NOW + 30),
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "Date": http_date(NOW),
        },
        now=NOW + 999,  # Date wins over the local clock
    )
    assert s.limits == {
        "requests": 50,
        "tokens": 90000,
        "input-tokens": 40000,
        "output-tokens": 8000,
    }
    assert [q.name for q in s.exhausted] == ["input-tokens"]
    assert s.pause == 30.0


def test_ietf_quotas_join_ratelimit_and_policy() -> None:
    s = rate_limit_state(
        {
            "RateLimit": '"burst";r=0;t=3, "day";r=900;t=4000',
            "RateLimit-Policy": '"burst";q=100;w=60, "day";q=1000;w=86400, "month";q=9;w=9',
        }
    )
    assert s.quota("burst") == Quota("burst", 100, 0, 3.0, 60.0)
    assert s.quota("day") == Quota("day", 1000, 900, 4000.0, 86400.0)
    assert s.quota("month") == Quota("month", 9, None, None, 9.0)
    assert s.pause == 3.0
    # A malformed policy is ignored as a whole; the RateLimit field still counts.
    s = rate_limit_state({"RateLimit": '"b";r=0;t=3', "RateLimit-Policy": '"b";q=x;w=60'})
    assert s.quotas == (Quota("b", None, 0, 3.0),)


def test_legacy_quotas() -> None:
    s = rate_limit_state(
        {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9"}
    )
    assert s.quotas == (Quota("default", 60, 0, 9.0),)
    # draft-03's list form: the first number is the limit.
    assert rate_limit_state({"RateLimit-Limit": "100, 100;w=60"}).limits == {"default": 100}


def test_pause_needs_remaining_zero() -> None:
    # On a success the reset alone is no reason to pause (wait_hint would read it as a hint).
    s = rate_limit_state({"x-ratelimit-reset-requests": "2s"})
    assert s.pause is None
    assert s.exhausted == ()
    assert rate_limit_state({}).pause is None


# Fuzzing: arbitrary header strings never raise; every number is finite and in [0, max]. ------

_NAMES = st.sampled_from(
    [
        "Retry-After",
        "retry-after-ms",
        "Date",
        "RateLimit",
        "RateLimit-Policy",
        "RateLimit-Limit",
        "RateLimit-Reset",
        "RateLimit-Remaining",
        "X-RateLimit-Limit",
        "X-RateLimit-Reset",
        "X-RateLimit-Remaining",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-limit",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r'"?[a-z]{0,3}"?(;[rtqw]=-?[0-9x.]{0,12}){0,3}(, ?)?', fullmatch=True),
    st.from_regex(
        r"-?[0-9]{0,25}(\.[0-9]{0,5})?(h|m|s|ms|us|ns)?([0-9]{0,3}(m|s))?", fullmatch=True
    ),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**11), max_value=10**12).map(
        lambda t: formatdate(t, usegmt=True) if 0 <= t < 253402300799 else str(t)
    ),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    max_delay=st.floats(min_value=0, max_value=1e6),
)
def test_arbitrary_headers_never_raise(headers: list[tuple[str, str]], max_delay: float) -> None:
    for h in (headers, CIMultiDict(headers), dict(headers)):
        hint = wait_hint(h, max_delay=max_delay, now=NOW)
        assert hint is None or (math.isfinite(hint.seconds) and 0 <= hint.seconds <= max_delay)
        assert hint is None or hint.source in ("retry_after", "rate_limit_header")
        r = parse_ratelimit(h, max_delay=max_delay, now=NOW)
        assert r is None or (math.isfinite(r) and 0 <= r <= max_delay)
        state = rate_limit_state(h, max_delay=max_delay, now=NOW)
        for q in state.quotas:
            assert q.reset is None or (math.isfinite(q.reset) and 0 <= q.reset <= max_delay)
            assert q.limit is None or q.limit >= 0
            assert q.remaining is None or q.remaining >= 0
            assert q.window is None or (math.isfinite(q.window) and q.window >= 0)
        p = state.pause
        assert p is None or 0 <= p <= max_delay


@settings(max_examples=200, deadline=None)
@given(value=_VALUES, date=st.one_of(st.none(), _VALUES))
def test_parse_retry_after_never_raises(value: str, date: str | None) -> None:
    r = parse_retry_after(value, date=date, now=NOW, max_delay=100.0)
    assert r is None or (math.isfinite(r) and 0 <= r <= 100.0)
