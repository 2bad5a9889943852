"""Header lookup and the value parsers every hint is built from. Pure functions, no client.

Everything here tolerates any input: a parser given a malformed value returns ``None``, never
raises, and never returns a negative, NaN or infinite number of seconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "HeaderIndex",
    "HeadersLike",
    "base_time",
    "cap",
    "check_max_delay",
    "delay_seconds",
    "first",
    "index_headers",
    "parse_duration",
    "parse_http_date",
    "parse_milliseconds",
    "parse_retry_after",
    "parse_rfc3339",
    "parse_sf_list",
    "unix_or_seconds",
]

#: Default cap of a server-provided wait, in seconds (urllib3's ``DEFAULT_RETRY_AFTER_MAX``).
DEFAULT_MAX_RETRY_AFTER = 21600.0

#: What every function taking headers accepts: a mapping (``dict``, ``httpx.Headers``,
#: aiohttp's ``CIMultiDictProxy``), a list of ``(name, value)`` pairs, or ``None``. Names are
#: matched case-insensitively; repeated fields keep every value. ``bytes`` names and values are
#: decoded as Latin-1; anything that is neither ``str`` nor ``bytes`` is skipped.
HeadersLike: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]] | None

#: Lower-cased field name -> its values, in order.
HeaderIndex: TypeAlias = dict[str, list[str]]

# Above this many digits an integer is beyond any cap; int() of huge strings is also slow.
_MAX_DIGITS = 15
_HUGE = float(10**_MAX_DIGITS)
_DIGITS = re.compile(r"[0-9]+")
_UNIX_THRESHOLD = 1_000_000_000


def _text(v: object) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1")
    return None


def _pairs(headers: Any) -> Iterable[Any]:
    multi_items = getattr(headers, "multi_items", None)  # httpx / httpx2: one pair per line
    if callable(multi_items):
        return multi_items()  # type: ignore[no-any-return]
    items = getattr(headers, "items", None)  # Mapping, multidict (every pair)
    if callable(items):
        return items()  # type: ignore[no-any-return]
    return headers  # type: ignore[no-any-return]


def index_headers(headers: HeadersLike | Any) -> HeaderIndex:
    """Every field of ``headers`` by lower-cased name; ``{}`` for anything unreadable."""
    index: HeaderIndex = {}
    if headers is None or isinstance(headers, (str, bytes)):
        return index
    try:
        for pair in _pairs(headers):
            try:
                k, v = pair
            except (TypeError, ValueError):
                continue
            name, value = _text(k), _text(v)
            if name is not None and value is not None:
                index.setdefault(name.lower(), []).append(value)
    except Exception:  # a broken mapping is "no headers", never an error
        return index
    return index


def first(index: HeaderIndex, name: str) -> str | None:
    """The first value of the lower-case field ``name``, or ``None``."""
    values = index.get(name)
    return values[0] if values else None


def check_max_delay(max_delay: object) -> float:
    """``max_delay`` as a float; ``TypeError``/``ValueError`` naming it unless finite and >= 0."""
    if isinstance(max_delay, bool) or not isinstance(max_delay, (int, float)):
        raise TypeError(f"max_delay must be a number of seconds, got {type(max_delay).__name__}")
    v = float(max_delay)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"max_delay must be a finite number of seconds >= 0, got {max_delay!r}")
    return v


def cap(seconds: float, max_delay: float) -> float | None:
    """``seconds`` clamped to ``[0, max_delay]``; ``None`` if NaN, infinite or negative."""
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, max_delay)


def delay_seconds(value: str) -> int | None:
    """RFC 9110 delay-seconds (ASCII digits only, surrounding blanks allowed), or ``None``."""
    v = value.strip()
    if not _DIGITS.fullmatch(v):
        return None
    return int(v) if len(v) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_http_date(value: str) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) as a Unix timestamp, or ``None``.

    A date without a time zone (asctime) is taken as UTC, as RFC 9110 requires.
    """
    if not isinstance(value, str):
        return None
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


def base_time(date: str | None, now: float | None) -> float:
    """The clock an absolute time is read against: the response's ``Date``, else ``now``."""
    base = parse_http_date(date) if isinstance(date, str) else None
    if base is None:
        base = time.time() if now is None else now
    return base


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
        date: the response's ``Date`` header: an HTTP-date in ``value`` is taken relative to it
            (this cancels the skew between the server's clock and ours).
        now: the local Unix time used when ``date`` is absent or malformed (default: now).
        max_delay: the cap; larger waits are clamped to it.

    ``value`` is delay-seconds (ASCII digits only, RFC 9110 §10.2.3) or an HTTP-date. Returns
    ``None`` for a missing, empty, negative, fractional (``"1.5"``) or otherwise malformed value,
    ``0.0`` for a date in the past, and otherwise a number in ``[0, max_delay]``.
    """
    if not isinstance(value, str):
        return None
    secs = delay_seconds(value)
    if secs is not None:
        return min(float(secs), max_delay)
    retry_at = parse_http_date(value)
    if retry_at is None:
        return None
    return cap(max(0.0, retry_at - base_time(date, now)), max_delay)


_MS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_milliseconds(value: str | None) -> float | None:
    """``retry-after-ms`` (non-negative decimal milliseconds) in seconds, or ``None``."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if not _MS.fullmatch(v) or len(v) > 40:
        return None
    return float(v) / 1000.0


# A Go time.Duration as OpenAI prints it: "1s", "6m0s", "250ms", "1m30.5s", "1h2m3.5s".
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(h|ms|m|s|us|µs|μs|ns)")
_DURATION = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:h|ms|m|s|us|µs|μs|ns))+")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6}


def parse_duration(value: str | None) -> float | None:
    """A Go-style duration (``"1s"``, ``"6m0s"``, ``"250ms"``, ``"1m30.5s"``) in seconds.

    Units ``h``, ``m``, ``s``, ``ms``, ``us``/``µs`` and ``ns``, each after a non-negative decimal
    number; a bare ``"0"`` is zero. No sign, no blanks inside. ``None`` if malformed.
    """
    if not isinstance(value, str):
        return None
    v = value.strip()
    if v == "0":
        return 0.0
    if len(v) > 64 or not _DURATION.fullmatch(v):
        return None
    total = 0.0
    for number, unit in _DURATION_PART.findall(v):
        total += float(number) * _UNIT.get(unit, 1e-9)
    return total if math.isfinite(total) else _HUGE


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_rfc3339(value: str | None) -> float | None:
    """An RFC 3339 date-time (``"2025-01-01T00:00:30Z"``, offsets and fractions allowed).

    Returns a Unix timestamp, or ``None`` if malformed (a time zone is required).
    """
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    try:
        if zone in ("Z", "z"):
            tz = timezone.utc
        else:
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        dt = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
        return dt.timestamp() + frac
    except (ValueError, OverflowError, OSError):
        return None


def unix_or_seconds(value: str, date: str | None, now: float | None) -> float | None:
    """A legacy reset: delay-seconds, or (above 10⁹) a Unix timestamp read against ``date``."""
    secs = delay_seconds(value)
    if secs is None:
        return None
    if secs > _UNIX_THRESHOLD:
        return max(0.0, secs - base_time(date, now))
    return float(secs)


# One Structured-Field list member (RFC 8941): a token or string, then ;key=value parameters.
_SF_ITEM = re.compile(
    r"""\s*("(?:[^"\\]|\\.)*"|[A-Za-z*][A-Za-z0-9_\-.:%*/]*)"""
    r"""((?:\s*;\s*[a-z*][a-z0-9_\-.*]*(?:=(?:"(?:[^"\\]|\\.)*"|:[A-Za-z0-9+/=]*:|[^;,\s"]+))?)*)\s*"""
)
_SF_PARAM = re.compile(
    r"""\s*;\s*([a-z*][a-z0-9_\-.*]*)(?:=("(?:[^"\\]|\\.)*"|:[A-Za-z0-9+/=]*:|[^;,\s"]+))?"""
)


def parse_sf_list(lines: Iterable[str]) -> list[tuple[str, dict[str, str]]] | None:
    """A Structured-Field list as ``(member, parameters)`` pairs, or ``None`` if malformed.

    Several field lines are one list (joined by commas). A string member loses its quotes; a
    parameter without a value is ``"?1"`` (true).
    """
    members: list[tuple[str, dict[str, str]]] = []
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
        for p in _SF_PARAM.finditer(m.group(2)):
            params[p.group(1)] = p.group(2) if p.group(2) is not None else "?1"
        name = m.group(1)
        members.append((name[1:-1] if name.startswith('"') else name, params))
        pos = m.end()
        if pos < n:
            if text[pos] != ",":
                return None
            pos += 1
            if pos >= n or not text[pos:].strip():
                return None  # trailing comma
    return members
