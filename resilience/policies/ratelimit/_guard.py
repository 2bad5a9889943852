"""The adaptive latency guard: a slot held past its window for as long as requests take to land.

Why: an exact limiter admits the ``limit``-th request of a window at ``t`` and the next one at
``t + window``; an upstream that counts the same quota on its own clock counts each request when
it *arrives*. A request that reaches the upstream ``d`` seconds after its admission is still in
the upstream's window ``d`` seconds after it left ours, and the request admitted into the freed
slot draws a 429. The guard (``window + guard`` per slot) covers ``d``. A fixed 0.15 s covers a
warm client on a LAN; a cold SDK client (connection set-up, TLS, the client's own start-up)
lands later, and its first window is where a strict upstream answers 429.

The rule (``guard=None``, the default): the guard is the larger of :data:`DEFAULT_GUARD` and the
recent *peak* of the time from admission to the upstream's answer (the protected call's end: an
upper bound on when the request arrived), capped at :data:`MAX_AUTO_GUARD` and at a quarter of
the window. A peak holds for two windows, then halves every window, so a slow start widens the
first windows and the guard comes back once requests are fast again. A caller that reserved a
slot before the guard widened sleeps the difference when it wakes up. Each process follows its
own calls; the store decides each admission with the caller's window, so a wider guard only
makes that process's admissions more conservative (never admits more than ``limit`` per ``window``).

The answers of the first admissions come back within the first window, so the guard is already
wide when their slots are reused a window later: the cold start draws no 429s. The price: a
call that always takes longer than the guard (a long AI completion) keeps its slot up to the
cap longer, at most 1 s in a 60 s window (1.6 % of throughput). ``guard=<seconds>`` fixes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from resilience.stores.base import WindowLimit

__all__ = ["DEFAULT_GUARD", "MAX_AUTO_GUARD", "AutoGuard", "adapt", "widened"]

#: Seconds an admission keeps its slot beyond the window at least (``guard=None``). Measured
#: with ``benchmarks/guard.py`` (4 processes x 25 tasks, strict upstream at 100 per 2 s, 2-core
#: machine): guard 0 drew 8-18 % 429s (19.5 % with cold connections on a loaded machine) at
#: 81-90 % goodput; the smallest guard with zero 429s was 0.05 s (warm connections), 0.2 s with
#: cold connections under load; 0.15 s gave zero 429s at 92-94 % goodput in the warm runs. The
#: floor is 0.15 s: 3x the warm measurement (see docs/benchmarks.md, "Latency guard").
DEFAULT_GUARD = 0.15

#: The most the adaptive guard widens a slot: 1 s (and at most a quarter of the window).
MAX_AUTO_GUARD = 1.0

# A new guard is applied when it differs from the one in force by more than this (seconds):
# the limits the store sees change rarely, not on every call.
_STEP = 0.01


class AutoGuard:
    """The adaptive guard of one limiter (see the module docs). Not thread-safe, like asyncio.

    :meth:`observe` takes the seconds from an admission to the call's answer and returns the
    guard to apply when it changed (else ``None``); :meth:`current` the decayed guard at
    ``now`` (monotonic seconds) for the same use.
    """

    __slots__ = ("_cap", "_half_life", "_peak", "_since", "applied", "floor")

    def __init__(self, floor: float, window: float) -> None:
        self.floor = floor
        self._cap = max(floor, min(MAX_AUTO_GUARD, window / 4))
        self._half_life = window
        self._peak = 0.0
        self._since = 0.0
        #: The guard the limiter's limits carry now.
        self.applied = floor

    def _decayed(self, now: float) -> float:
        if self._peak <= 0.0:
            return 0.0
        held = now - self._since - 2 * self._half_life
        if held <= 0:  # a peak holds two windows: slots are reused a window later
            return self._peak
        return float(self._peak * 0.5 ** (held / self._half_life))

    def current(self, now: float) -> float:
        """The guard at ``now``: floor <= guard <= cap."""
        return min(self._cap, max(self.floor, self._decayed(now)))

    def observe(self, seconds: float, now: float) -> float | None:
        """Record one answer ``seconds`` after its admission; the new guard if it moved."""
        if seconds > self._decayed(now):
            self._peak = seconds
            self._since = now
        return self.refresh(now)

    def refresh(self, now: float) -> float | None:
        """The guard to apply at ``now`` if it moved by more than 10 ms, else ``None``."""
        g = self.current(now)
        if abs(g - self.applied) > _STEP or (g == self.floor and self.applied != g):
            self.applied = g
            return g
        return None


def adapt(
    limits: tuple[WindowLimit, ...],
    windows: Sequence[float],
    guards: Sequence[AutoGuard | None],
    seconds: float,
) -> tuple[WindowLimit, ...] | None:
    """Feed one answer time to each adaptive guard; the limits to use from now on if a guard
    moved (each ``window_us`` = its window + its guard), else ``None``."""
    now = time.monotonic()
    moved = False
    for g in guards:
        if g is not None and (seconds > g.applied or g.applied != g.floor):
            moved = g.observe(seconds, now) is not None or moved
    if not moved:
        return None
    return tuple(
        lim if g is None else WindowLimit(lim.name, lim.limit, round((w + g.applied) * 1e6))
        for lim, w, g in zip(limits, windows, guards, strict=True)
    )


def widened(old: Sequence[WindowLimit], new: Sequence[WindowLimit]) -> float:
    """Seconds the guard grew from ``old`` to ``new`` limits (0 if it did not)."""
    grew = max(n.window_us - o.window_us for o, n in zip(old, new, strict=True))
    return max(grew, 0) / 1e6
