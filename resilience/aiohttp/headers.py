"""Server-provided wait hints: ``Retry-After`` and the rate-limit header fields.

Pure functions over header values (no aiohttp import): they never raise on malformed input, and
every hint they return is ``None`` (no usable hint) or a number of seconds in ``[0, max_delay]``.

Precedence (:func:`retry_after_hint`), as the IETF draft requires ("If a response contains both
the RateLimit and Retry-After fields, the Retry-After field MUST take precedence"):

1. ``Retry-After`` (RFC 9110 §10.2.3): delay-seconds (ASCII digits only), or an HTTP-date taken
   relative to the response's ``Date`` header when present (this cancels the skew between the
   server's clock and ours), otherwise relative to the local clock. A date in the past means 0.
   Negative, fractional (``"1.5"``), empty or garbage values are ignored.
2. IETF ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers): the largest ``t`` among the items
   whose remaining quota ``r`` is 0. A malformed field is ignored as a whole.
3. Legacy fields: ``RateLimit-Reset`` / ``X-RateLimit-Reset`` when the matching ``*-Remaining``
   is ``0`` (or absent). A value larger than 10⁹ is read as a Unix timestamp (GitHub's form),
   otherwise as delay-seconds.

Huge values are capped at ``max_delay`` (default :data:`DEFAULT_MAX_RETRY_AFTER`, 6 h, as urllib3).

:func:`wait_hint` also tells which field the hint came from (:data:`HintSource`):
``"retry_after"`` for ``Retry-After``, ``"rate_limit_header"`` for the rate-limit fields. The
errors of :mod:`resilience.aiohttp` carry it as ``retry_after_source``, and
:class:`resilience.Retry` reports it as the telemetry attribute
``resilience.retry.delay_source`` when the hint sets the delay.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "HintSource",
    "parse_http_date",
    "parse_ratelimit",
    "parse_retry_after",
    "retry_after_hint",
    "wait_hint",
]

#: Where a wait hint came from: the ``Retry-After`` field, or a rate-limit field's reset
#: (IETF ``RateLimit``, ``RateLimit-Reset`` / ``X-RateLimit-Reset``).
HintSource = Literal["retry_after", "rate_limit_header"]

#: Default cap of a server-provided wait, in seconds (urllib3's ``DEFAULT_RETRY_AFTER_MAX``).
DEFAULT_MAX_RETRY_AFTER = 21600.0

_DIGITS = re.compile(r"[0-9]+")
# One Structured-Field list member: a token or string, then ;key=value parameters.
_SF_ITEM = re.compile(
    r"""\s*(?:"(?:[^"\\]|\\.)*"|[A-Za-z*][A-Za-z0-9_\-.:%*/]*)"""
    r"""((?:\s*;\s*[a-z*][a-z0-9_\-.*]*(?:=(?:"(?:[^"\\]|\\.)*"|:[A-Za-z0-9+/=]*:|[^;,\s"]+))?)*)\s*"""
)
_SF_PARAM = re.compile(
    r"""\s*;\s*([a-z*][a-z0-9_\-.*]*)(?:=("(?:[^"\\]|\\.)*"|:[A-Za-z0-9+/=]*:|[^;,\s"]+))?"""
)
_UNIX_THRESHOLD = 1_000_000_000


def _cap(seconds: float, max_delay: float) -> float | None:
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, max_delay)


def parse_http_date(value: str) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as a Unix timestamp, or ``None``.

    A date without a time zone (asctime) is taken as UTC, as RFC 9110 requires.
    """
    try:
        dt = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None:  # pragma: no cover - older Pythons returned None
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):  # pragma: no cover - out-of-range years
        return None


def _delay_seconds(value: str) -> int | None:
    v = value.strip()
    if not _DIGITS.fullmatch(v):
        return None
    return int(v) if len(v) <= 15 else 10**15  # beyond any cap; avoids int() digit limits


def parse_retry_after(
    value: str | None,
    *,
    date: str | None = None,
    now: float | None = None,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
) -> float | None:
    """Seconds to wait according to one ``Retry-After`` value, or ``None`` if it is unusable.

    Args:
        value: the header's value (``None`` when absent).
        date: the response's ``Date`` header: an HTTP-date in ``value`` is taken relative to it.
        now: the local Unix time used when ``date`` is absent or malformed (default: now).
        max_delay: the cap; larger waits are clamped to it.

    Returns ``None`` for a missing, empty, negative, fractional or otherwise malformed value,
    ``0.0`` for a date in the past, and otherwise a number in ``[0, max_delay]``.
    """
    if not isinstance(value, str):
        return None
    secs = _delay_seconds(value)
    if secs is not None:
        return min(float(secs), max_delay)
    retry_at = parse_http_date(value)
    if retry_at is None:
        return None
    base = parse_http_date(date) if isinstance(date, str) else None
    if base is None:
        base = time.time() if now is None else now
    return _cap(max(0.0, retry_at - base), max_delay)


def _getall(headers: Mapping[str, str] | Any, name: str) -> list[str]:
    """All values of ``name`` (case-insensitive), tolerating multiple field lines."""
    getall = getattr(headers, "getall", None)
    if callable(getall):
        try:
            return [v for v in getall(name, ()) if isinstance(v, str)]
        except (TypeError, KeyError):  # pragma: no cover - exotic mappings
            pass
    lname = name.lower()
    try:
        return [
            v
            for k, v in headers.items()
            if isinstance(k, str) and k.lower() == lname and isinstance(v, str)
        ]
    except (AttributeError, TypeError):
        return []


def _first(headers: Mapping[str, str] | Any, name: str) -> str | None:
    values = _getall(headers, name)
    return values[0] if values else None


def _parse_sf_list(lines: Iterable[str]) -> list[dict[str, str]] | None:
    """Parse a Structured-Field list into each member's parameters, or ``None`` if malformed."""
    members: list[dict[str, str]] = []
    text = ",".join(lines)
    if not text.strip():
        return None
    pos = 0
    n = len(text)
    while pos < n:
        m = _SF_ITEM.match(text, pos)
        if m is None or m.end() == pos:
            return None
        params: dict[str, str] = {}
        for p in _SF_PARAM.finditer(m.group(1)):
            params[p.group(1)] = p.group(2) if p.group(2) is not None else "?1"
        members.append(params)
        pos = m.end()
        if pos < n:
            if text[pos] != ",":
                return None
            pos += 1
            if pos >= n or not text[pos:].strip():
                return None  # trailing comma
    return members


def parse_ratelimit(
    headers: Mapping[str, str] | Any,
    *,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
    now: float | None = None,
    legacy: bool = True,
) -> float | None:
    """Seconds until quota returns, from the rate-limit header fields, or ``None``.

    Reads the IETF ``RateLimit`` field (the largest ``t`` among items with ``r=0``; a field
    whose syntax is malformed, or whose ``r``/``t`` are not non-negative integers, is ignored),
    then, if that gives nothing and ``legacy`` is true, ``RateLimit-Reset`` /
    ``X-RateLimit-Reset`` when the matching ``*-Remaining`` is ``0`` or absent. ``headers`` is
    any mapping (``aiohttp``'s ``CIMultiDictProxy``, a ``dict``); names are case-insensitive.
    """
    try:
        lines = _getall(headers, "RateLimit")
        if lines:
            items = _parse_sf_list(lines)
            if items is not None:
                best: float | None = None
                ok = True
                for params in items:
                    r = params.get("r")
                    t = params.get("t")
                    if r is None or _delay_seconds(r) is None:
                        ok = False
                        break
                    if t is not None and _delay_seconds(t) is None:
                        ok = False
                        break
                    if int(r) == 0 and t is not None:
                        best = max(best or 0.0, float(int(t)))
                if ok and best is not None:
                    return min(best, max_delay)
        if not legacy:
            return None
        for prefix in ("RateLimit-", "X-RateLimit-"):
            reset = _first(headers, prefix + "Reset")
            if reset is None:
                continue
            remaining = _first(headers, prefix + "Remaining")
            if remaining is not None and remaining.strip() != "0":
                continue
            secs = _delay_seconds(reset)
            if secs is None:
                continue
            if secs > _UNIX_THRESHOLD:
                base = parse_http_date(_first(headers, "Date") or "")
                if base is None:
                    base = time.time() if now is None else now
                return _cap(max(0.0, secs - base), max_delay)
            return min(float(secs), max_delay)
    except Exception:
        return None
    return None


def retry_after_hint(
    headers: Mapping[str, str] | Any,
    *,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
    now: float | None = None,
    legacy: bool = True,
) -> float | None:
    """The server's wait hint in seconds: ``Retry-After`` first, then the rate-limit fields.

    Returns ``None`` when no usable hint is present, otherwise a number in ``[0, max_delay]``.
    Never raises on malformed headers. :func:`wait_hint` also tells which field it came from.
    """
    hint = wait_hint(headers, max_delay=max_delay, now=now, legacy=legacy)
    return None if hint is None else hint[0]


def wait_hint(
    headers: Mapping[str, str] | Any,
    *,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
    now: float | None = None,
    legacy: bool = True,
) -> tuple[float, HintSource] | None:
    """The server's wait hint and where it came from, or ``None`` without a usable hint.

    Same precedence and bounds as :func:`retry_after_hint`; the source is ``"retry_after"``
    when ``Retry-After`` gave the hint, ``"rate_limit_header"`` when a rate-limit field's reset
    did. Never raises on malformed headers.
    """
    try:
        hint = parse_retry_after(
            _first(headers, "Retry-After"),
            date=_first(headers, "Date"),
            now=now,
            max_delay=max_delay,
        )
    except Exception:
        hint = None
    if hint is not None:
        return hint, "retry_after"
    hint = parse_ratelimit(headers, max_delay=max_delay, now=now, legacy=legacy)
    if hint is not None:
        return hint, "rate_limit_header"
    return None
