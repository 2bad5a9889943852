"""How long an HTTP outcome asks us to wait: one function, :func:`wait_hint`."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from resilience.http._headers import (
    DEFAULT_MAX_RETRY_AFTER,
    HeaderIndex,
    HeadersLike,
    check_max_delay,
    first,
    index_headers,
    parse_milliseconds,
    parse_retry_after,
)
from resilience.http._ratelimit import reset_hint

__all__ = ["HintSource", "WaitHint", "retry_after_hint", "wait_hint", "wait_hint_of_index"]

#: Where a hint came from, as telemetry reports it in ``resilience.retry.delay_source``:
#: ``"retry_after"`` for ``retry-after-ms`` / ``Retry-After``, ``"rate_limit_header"`` for the
#: rate-limit fields.
HintSource = Literal["retry_after", "rate_limit_header"]


class WaitHint(NamedTuple):
    """A server's request to wait before the next attempt.

    Attributes:
        seconds: how long, a finite number in ``[0, max_delay]``.
        source: ``"retry_after"`` or ``"rate_limit_header"`` (see :data:`HintSource`).
    """

    seconds: float
    source: HintSource


def wait_hint_of_index(
    index: HeaderIndex, *, max_delay: float, now: float | None, legacy: bool = True
) -> WaitHint | None:
    """:func:`wait_hint` over headers already indexed (``max_delay`` already checked)."""
    ms = parse_milliseconds(first(index, "retry-after-ms"))
    if ms is not None:
        return WaitHint(min(ms, max_delay), "retry_after")
    ra = parse_retry_after(
        first(index, "retry-after"), date=first(index, "date"), now=now, max_delay=max_delay
    )
    if ra is not None:
        return WaitHint(ra, "retry_after")
    rl = reset_hint(index, max_delay=max_delay, now=now, legacy=legacy)
    if rl is not None:
        return WaitHint(rl, "rate_limit_header")
    return None


def wait_hint(
    headers: HeadersLike | Any,
    *,
    now: float | None = None,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
    legacy: bool = True,
) -> WaitHint | None:
    """How long the response with these ``headers`` asks us to wait, or ``None``.

    The first usable field wins, in this order (the SDKs' own order, then the rate-limit
    fields; RFC 9110 and the IETF draft both put ``Retry-After`` before ``RateLimit``):

    1. ``retry-after-ms``: a non-negative decimal number of milliseconds (OpenAI's and
       Anthropic's SDKs read it first);
    2. ``Retry-After``: delay-seconds (ASCII digits; ``"1.5"`` is malformed, as RFC 9110 says,
       although the SDKs accept it) or an HTTP-date, read against the response's ``Date``
       when present, else the local clock (``now``); a past date means 0;
    3. ``x-ratelimit-reset-requests`` / ``-tokens`` (Go durations: ``"1s"``, ``"6m0s"``,
       ``"250ms"``, ``"1m30.5s"``);
    4. ``anthropic-ratelimit-*-reset`` (RFC 3339 times);
    5. IETF ``RateLimit`` (the largest ``t`` among items with ``r=0``);
    6. if ``legacy``, ``RateLimit-Reset`` then ``X-RateLimit-Reset`` (delay-seconds, or a Unix
       timestamp above 10⁹).

    For 3 to 6, a reset counts only when the matching remaining count is ``0`` or not reported,
    and within one family the largest such reset wins (every exhausted quota must be back).
    The first two give ``source="retry_after"``, the others ``"rate_limit_header"``.

    ``headers`` is any mapping, multi-dict or list of ``(name, value)`` pairs; names are
    case-insensitive and a repeated field's first value is used. Malformed, negative, NaN or
    infinite values are skipped (the next field is tried), never raised; a wait above
    ``max_delay`` (default 6 h, urllib3's cap) is clamped to it. ``max_delay`` must be a finite
    number >= 0 (``ValueError`` otherwise).
    """
    max_delay = check_max_delay(max_delay)
    return wait_hint_of_index(index_headers(headers), max_delay=max_delay, now=now, legacy=legacy)


def retry_after_hint(
    headers: HeadersLike | Any,
    *,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
    now: float | None = None,
    legacy: bool = True,
) -> float | None:
    """:func:`wait_hint` in seconds alone: ``None`` when there is no usable hint."""
    hint = wait_hint(headers, now=now, max_delay=max_delay, legacy=legacy)
    return None if hint is None else hint.seconds
