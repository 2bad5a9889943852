"""Limits learned from the upstream: what a limiter does with the provider's rate-limit fields.

Where the limiter sees the upstream's answer with its headers (a response returned through the
httpx transport or the aiohttp middleware, or an exception carrying one, e.g. an SDK's
``APIStatusError``), it reads the quotas with :func:`resilience.http.rate_limit_state` and
acts fleet-wide, through the store:

- **Exhausted quota → pause.** A quota reported at ``remaining: 0`` with a reset time (OpenAI's
  ``x-ratelimit-remaining-*``, Anthropic's ``anthropic-ratelimit-*-remaining``, an IETF
  ``RateLimit`` item with ``r=0``) pauses the key until that reset, at most the quota's window
  (60 s unless the provider says): the fleet waits *before* drawing a 429. (A 429's own wait
  hint already pauses the key; this reads the successful answers that precede it.)
- **Lower provider limit → adopted.** When the provider's limit for the quota this limiter
  follows, scaled to the limiter's window, is below the configured ``limit``, the key's limit is
  capped there for every process (:meth:`~resilience.stores.base.WindowOps.window_learn`) for two
  of the provider's windows, renewed while the provider keeps reporting it and lifted when it
  reports more. Each change is logged, added as a ``resilience.rate_limiter.upstream_limit``
  span event and recorded in the ``resilience.rate_limiter.limit`` gauge.

Which quota a limiter follows: ``upstream_quota=`` names it; by default the quota named like the
limiter when the provider reports one (``name="input-tokens"``), else ``"requests"`` (then the
legacy and IETF ``"default"``) for a limiter whose cost is 1 and ``"tokens"`` for one whose
cost is a callable or above 1. The
provider's window is ``RateLimit-Policy``'s ``w`` when given, else the limiter's
``upstream_window`` (default a minute: OpenAI's and Anthropic's quotas are per minute).
``follow_upstream=False`` turns all of this off.

Cost: nothing for a result without ``headers``; for an answer with them, one parse, and a store
round trip only when something changes (a pause this process has not recorded yet, a new
learned limit, or the renewal of one every provider window).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from resilience import telemetry
from resilience._context import CallContext
from resilience.errors import ResilienceError
from resilience.http import outcome_of, rate_limit_state
from resilience.stores.base import Store, WindowLimit

__all__ = ["PROVIDER_WINDOW", "Follower", "headers_of"]

logger = logging.getLogger("resilience")

#: The window of a provider's quota when its headers do not say (OpenAI, Anthropic: a minute).
PROVIDER_WINDOW = 60.0
# A learned limit holds for this many provider windows unless reported again.
_HOLD = 2
# Remembered keys per limiter (the memo is cleared beyond: at worst one more store write).
_MEMO_MAX = 10_000


def headers_of(obj: object) -> Any:
    """The headers of an upstream answer: a response's ``headers``, or those an exception
    carries (:func:`resilience.http.outcome_of`); ``None`` when there are none."""
    if isinstance(obj, BaseException):
        o = outcome_of(obj)
        return None if o is None else o.headers
    return getattr(obj, "headers", None)


class Follower:
    """What one limiter (or one :func:`all_of`) learns from the upstream, per key."""

    __slots__ = (
        "_learned",
        "_limits",
        "_name",
        "_paused",
        "_quotas",
        "_store",
        "_upstream_window",
        "_windows",
    )

    def __init__(
        self,
        name: str,
        store: Store,
        limits: Sequence[WindowLimit],
        windows: Sequence[float],
        quotas: Sequence[tuple[str, ...]],
        upstream_window: float = 60.0,
    ) -> None:
        self._upstream_window = upstream_window
        self._name = name
        self._store = store
        self._limits = tuple((lim,) for lim in limits)  # one tuple each, reused (key caches)
        self._windows = tuple(windows)
        self._quotas = tuple(quotas)  # per limit: the quota names to look for, in order
        self._paused: dict[str, float] = {}  # key -> monotonic end of the pause recorded
        self._learned: dict[tuple[str, int], tuple[int, float]] = {}  # -> (limit, written)

    async def seen(self, answer: object, key: str, ctx: CallContext | None, pause: bool) -> None:
        """Act on ``answer`` (a response or an exception carrying one); never raises a store
        error (logged). ``pause``: also pause the key for an exhausted quota."""
        headers = headers_of(answer)
        if headers is None:
            return
        state = rate_limit_state(headers)
        if not state.quotas:
            return
        try:
            if pause:
                await self._pause(state.quotas, key)
            for i in range(len(self._limits)):
                await self._learn(i, state, key, ctx)
        except ResilienceError:
            logger.warning("rate limiter %r: could not follow the upstream's limits", self._name)

    async def _pause(self, quotas: Sequence[Any], key: str) -> None:
        resets = [
            min(q.reset, q.window or self._upstream_window)
            for q in quotas
            if q.remaining == 0 and q.reset is not None and q.reset > 0
        ]
        if not resets:
            return
        seconds = max(resets)
        now = time.monotonic()
        if self._paused.get(key, 0.0) >= now + seconds - 0.05:
            return  # this process recorded that pause already
        if len(self._paused) >= _MEMO_MAX:
            self._paused.clear()
        self._paused[key] = now + seconds
        lims = tuple(lim for (lim,) in self._limits)
        await self._store.window_penalize(lims, key, math.ceil(seconds * 1e6))

    async def _learn(self, i: int, state: Any, key: str, ctx: CallContext | None) -> None:
        quota = next((q for n in self._quotas[i] if (q := state.quota(n)) is not None), None)
        if quota is None or quota.limit is None:
            return
        (lim,) = self._limits[i]
        window = quota.window or self._upstream_window
        scaled = max(1, math.floor(quota.limit * self._windows[i] / window))
        want = scaled if scaled < lim.limit else lim.limit
        now = time.monotonic()
        hold = _HOLD * window
        memo = self._learned.get((key, i))
        if memo is not None and memo[0] == want and now - memo[1] < window:
            return  # unchanged, and written (learned, renewed or lifted) within a window
        if len(self._learned) >= _MEMO_MAX:
            self._learned.clear()
        self._learned[(key, i)] = (want, now)
        lifted = want == lim.limit
        await self._store.window_learn(
            self._limits[i], key, want, 0 if lifted else math.ceil(hold * 1e6)
        )
        if (memo is None and not lifted) or (memo is not None and memo[0] != want):
            logger.info(
                "rate limiter %r (key %r): the upstream's %s quota is %d per %gs; %s",
                lim.name,
                key,
                quota.name,
                quota.limit,
                window,
                f"limit {lim.limit} back in force"
                if lifted
                else f"using {want} per {self._windows[i]:g}s (configured {lim.limit})",
            )
            telemetry.limiter_upstream_limit(
                ctx, limiter=lim.name, quota=quota.name, limit=want, configured=lim.limit
            )


def quota_names(name: str, upstream_quota: str | None, unit_cost: bool) -> tuple[str, ...]:
    """The provider quota names a limiter follows, in order of preference."""
    if upstream_quota is not None:
        return (upstream_quota,)
    return (name, "requests", "default") if unit_cost else (name, "tokens")
