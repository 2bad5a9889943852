"""The provider's quotas, read from the rate-limit header fields.

Four families of fields, each read into :class:`Quota` values (a field whose value is malformed
is ignored; nothing here raises):

- **OpenAI style**: ``x-ratelimit-limit-<name>``, ``x-ratelimit-remaining-<name>`` (integers) and
  ``x-ratelimit-reset-<name>`` (a Go duration: ``"1s"``, ``"6m0s"``, ``"250ms"``), for
  ``<name>`` = ``requests``, ``tokens``, ...
- **Anthropic**: ``anthropic-ratelimit-<name>-limit``, ``-remaining`` (integers) and ``-reset``
  (an RFC 3339 time, read against the response's ``Date`` when present, else the local clock),
  for ``<name>`` = ``requests``, ``tokens``, ``input-tokens``, ``output-tokens``.
- **IETF** (draft-ietf-httpapi-ratelimit-headers): ``RateLimit: "name";r=<remaining>;t=<seconds>``
  and ``RateLimit-Policy: "name";q=<quota>;w=<window seconds>``, joined by name. A field whose
  syntax is malformed, or whose ``r``/``t`` (``q``/``w``) are not non-negative integers, is
  ignored as a whole, as the draft requires.
- **Legacy**: ``RateLimit-Limit``/``-Remaining``/``-Reset`` and the ``X-RateLimit-`` forms
  without a suffix (GitHub's); a reset above 10⁹ is a Unix timestamp (read against ``Date``),
  otherwise delay-seconds. These quotas are named ``"default"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from resilience.http._headers import (
    DEFAULT_MAX_RETRY_AFTER,
    HeaderIndex,
    HeadersLike,
    base_time,
    cap,
    check_max_delay,
    delay_seconds,
    first,
    index_headers,
    parse_duration,
    parse_rfc3339,
    parse_sf_list,
    unix_or_seconds,
)

__all__ = ["Quota", "RateLimitState", "parse_ratelimit", "rate_limit_state", "reset_hint"]


class Quota(NamedTuple):
    """One quota as the provider reports it; ``None`` where the headers do not say.

    Attributes:
        name: ``"requests"``, ``"tokens"``, ``"input-tokens"``, ``"output-tokens"``, an IETF
            policy name, or ``"default"`` for the legacy fields.
        limit: the quota's size (requests or tokens per window).
        remaining: what is left of it now.
        reset: seconds until it is restored, within ``[0, max_delay]``.
        window: the window in seconds (only ``RateLimit-Policy`` says).
    """

    name: str
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    window: float | None = None

    @property
    def exhausted(self) -> bool:
        """Whether the provider reports nothing left (``remaining == 0``)."""
        return self.remaining == 0


@dataclass(frozen=True)
class RateLimitState:
    """Every quota reported by one response's headers (see :func:`rate_limit_state`)."""

    quotas: tuple[Quota, ...] = ()

    def quota(self, name: str) -> Quota | None:
        """The first quota called ``name``, or ``None``."""
        for q in self.quotas:
            if q.name == name:
                return q
        return None

    @property
    def limits(self) -> dict[str, int]:
        """The provider's limit of each quota that reports one, by name (the first wins)."""
        out: dict[str, int] = {}
        for q in self.quotas:
            if q.limit is not None:
                out.setdefault(q.name, q.limit)
        return out

    @property
    def exhausted(self) -> tuple[Quota, ...]:
        """The quotas with ``remaining == 0``."""
        return tuple(q for q in self.quotas if q.remaining == 0)

    @property
    def pause(self) -> float | None:
        """Seconds until every exhausted quota is restored: the largest ``reset`` among quotas
        with ``remaining == 0`` and a known reset; ``None`` when no quota is exhausted with one.
        """
        resets = [q.reset for q in self.quotas if q.remaining == 0 and q.reset is not None]
        return max(resets) if resets else None


_INT_LEADING = re.compile(r"\s*([0-9]+)\s*(?:[,;].*)?", re.S)
_MALFORMED = -1  # internal: a remaining field that is present but unreadable


def _count(value: str | None, *, leading: bool = False) -> int | None:
    """A non-negative integer field (``_MALFORMED`` if present but unreadable)."""
    if value is None:
        return None
    if leading:
        m = _INT_LEADING.fullmatch(value)
        n = delay_seconds(m.group(1)) if m else None
    else:
        n = delay_seconds(value)
    return _MALFORMED if n is None else n


def _quota(
    name: str,
    limit: int | None,
    remaining: int | None,
    reset: float | None,
    max_delay: float,
    window: float | None = None,
) -> Quota:
    if remaining == _MALFORMED:  # unreadable remaining: no claim about exhaustion or reset
        remaining, reset = None, None
    return Quota(
        name=name,
        limit=None if limit == _MALFORMED else limit,
        remaining=remaining,
        reset=None if reset is None else cap(reset, max_delay),
        window=window,
    )


_OPENAI = re.compile(r"x-ratelimit-(limit|remaining|reset)-([a-z0-9][a-z0-9_-]*)")
_ANTHROPIC = re.compile(r"anthropic-ratelimit-([a-z0-9][a-z0-9_-]*?)-(limit|remaining|reset)")


def _by_suffix(index: HeaderIndex, pattern: re.Pattern[str], name_group: int) -> dict[str, Any]:
    fields: dict[str, dict[str, str]] = {}
    for key, values in index.items():
        m = pattern.fullmatch(key)
        if m is not None and values:
            kind = m.group(3 - name_group)
            fields.setdefault(m.group(name_group), {})[kind] = values[0]
    return fields


def _openai(index: HeaderIndex, max_delay: float, now: float | None) -> list[Quota]:
    out = []
    for name, f in _by_suffix(index, _OPENAI, 2).items():
        reset = parse_duration(f.get("reset"))
        out.append(
            _quota(name, _count(f.get("limit")), _count(f.get("remaining")), reset, max_delay)
        )
    return out


def _anthropic(index: HeaderIndex, max_delay: float, now: float | None) -> list[Quota]:
    out = []
    date = first(index, "date")
    for name, f in _by_suffix(index, _ANTHROPIC, 1).items():
        at = parse_rfc3339(f.get("reset"))
        reset = None if at is None else max(0.0, at - base_time(date, now))
        out.append(
            _quota(name, _count(f.get("limit")), _count(f.get("remaining")), reset, max_delay)
        )
    return out


def _sf_ints(
    lines: list[str] | None, required: str, optional: str
) -> list[tuple[str, int, int | None]] | None:
    """``(name, params[required], params[optional])`` per member; ``None`` if any is malformed."""
    if not lines:
        return None
    items = parse_sf_list(lines)
    if items is None:
        return None
    out = []
    for name, params in items:
        a, b = params.get(required), params.get(optional)
        av = delay_seconds(a) if a is not None else None
        bv = delay_seconds(b) if b is not None else None
        if av is None or (b is not None and bv is None):
            return None
        out.append((name, av, bv))
    return out


def _ietf(index: HeaderIndex, max_delay: float, now: float | None) -> list[Quota]:
    policies = _sf_ints(index.get("ratelimit-policy"), "q", "w") or []
    policy: dict[str, tuple[int, int | None]] = {}
    for name, q, w in policies:
        policy.setdefault(name, (q, w))
    out = []
    seen = set()
    for name, r, t in _sf_ints(index.get("ratelimit"), "r", "t") or []:
        limit, window = policy.get(name, (None, None))
        reset = None if t is None else float(t)
        out.append(
            _quota(name, limit, r, reset, max_delay, None if window is None else float(window))
        )
        seen.add(name)
    for name, (q, w) in policy.items():
        if name not in seen:
            out.append(_quota(name, q, None, None, max_delay, None if w is None else float(w)))
    return out


def _legacy(prefix: str) -> Callable[[HeaderIndex, float, float | None], list[Quota]]:
    def parse(index: HeaderIndex, max_delay: float, now: float | None) -> list[Quota]:
        limit = first(index, prefix + "limit")
        remaining = first(index, prefix + "remaining")
        reset = first(index, prefix + "reset")
        if limit is None and remaining is None and reset is None:
            return []
        secs = None if reset is None else unix_or_seconds(reset, first(index, "date"), now)
        return [_quota("default", _count(limit, leading=True), _count(remaining), secs, max_delay)]

    return parse


_Family = Callable[[HeaderIndex, float, float | None], list[Quota]]
#: The families, in the order their hints are consulted.
_FAMILIES: tuple[_Family, ...] = (_openai, _anthropic, _ietf)
_LEGACY: tuple[_Family, ...] = (_legacy("ratelimit-"), _legacy("x-ratelimit-"))


def rate_limit_state(
    headers: HeadersLike | Any,
    *,
    now: float | None = None,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
) -> RateLimitState:
    """Every quota that ``headers`` report (all four families; see the module docs).

    Use :attr:`RateLimitState.pause` for "a quota is at 0, restored in N seconds" (pause before
    drawing a 429) and :attr:`RateLimitState.limits` for the provider's limits. Never raises on
    malformed headers; every ``reset`` is within ``[0, max_delay]``.
    """
    max_delay = check_max_delay(max_delay)
    index = index_headers(headers)
    quotas: list[Quota] = []
    for family in (*_FAMILIES, *_LEGACY):
        try:
            quotas.extend(family(index, max_delay, now))
        except Exception:  # pragma: no cover - defensive: a parser bug is "no quota"
            continue
    return RateLimitState(tuple(quotas))


def reset_hint(
    index: HeaderIndex, *, max_delay: float, now: float | None, legacy: bool = True
) -> float | None:
    """The rate-limit fields' wait: the first family (OpenAI, Anthropic, IETF, legacy
    ``RateLimit-``, legacy ``X-RateLimit-``) with a quota whose remaining is 0 or not reported
    and whose reset is known gives the largest such reset."""
    for family in (*_FAMILIES, *_LEGACY) if legacy else _FAMILIES:
        try:
            quotas = family(index, max_delay, now)
        except Exception:  # pragma: no cover - defensive
            continue
        resets = [q.reset for q in quotas if q.reset is not None and q.remaining in (0, None)]
        if resets:
            return max(resets)
    return None


def parse_ratelimit(
    headers: HeadersLike | Any,
    *,
    max_delay: float = DEFAULT_MAX_RETRY_AFTER,
    now: float | None = None,
    legacy: bool = True,
) -> float | None:
    """Seconds until quota returns according to the rate-limit header fields, or ``None``.

    The families are consulted in order: OpenAI ``x-ratelimit-reset-*``, Anthropic
    ``anthropic-ratelimit-*-reset``, IETF ``RateLimit`` (the largest ``t`` among items with
    ``r=0``), then, if ``legacy``, ``RateLimit-Reset`` and ``X-RateLimit-Reset``. The first family
    with a quota whose remaining is ``0`` (or not reported) and whose reset is readable gives
    the largest such reset. Names are case-insensitive; never raises on malformed headers; the
    result is ``None`` or within ``[0, max_delay]``. ``Retry-After`` is not read here (see
    :func:`wait_hint`).
    """
    max_delay = check_max_delay(max_delay)
    return reset_hint(index_headers(headers), max_delay=max_delay, now=now, legacy=legacy)
