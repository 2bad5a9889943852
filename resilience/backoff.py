"""Delay strategies for :class:`resilience.Retry`: how long to sleep before the next attempt.

A strategy is any callable ``(attempt, previous_delay) -> seconds``:

- ``attempt`` is the 1-based number of the attempt that just failed (``1`` computes the sleep
  before the second attempt);
- ``previous_delay`` is the sleep actually taken before ``attempt`` (``0.0`` for the first),
  after the retrier applied any ``retry_after`` hint, so decorrelated jitter grows from what
  really happened.

The two built-in strategies are small immutable objects with a ``max`` attribute: the retrier
caps every delay, ``retry_after`` hints included, at ``max``. A plain user callable has no cap
(``getattr(strategy, "max", inf)``).

Why full jitter by default: when many clients fail at the same moment (an upstream 429 or a
restart), un-jittered exponential backoff makes them all retry at the same instants and fail
together again. AWS's simulation ("Exponential Backoff And Jitter") found no jitter the clear
loser, equal jitter next, and full jitter doing the least work; gRPC's A6 retry design uses full
jitter too.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

from resilience.policies._validate import (
    at_least,
    check_instance,
    check_one_of,
    positive_number,
)

__all__ = ["BackoffStrategy", "Constant", "Exponential", "Jitter", "constant", "exponential"]

Jitter = Literal["full", "equal", "decorrelated", "none"]
_JITTERS = ("full", "equal", "decorrelated", "none")


@runtime_checkable
class BackoffStrategy(Protocol):
    """What :class:`resilience.Retry` accepts as ``backoff``: ``(attempt, previous_delay) -> s``.

    The result must be a finite number of seconds ``>= 0``. An optional ``max`` attribute caps
    every delay the retrier computes (hints included).
    """

    def __call__(self, attempt: int, previous_delay: float) -> float:
        """Seconds to sleep after attempt number ``attempt`` (1-based) failed."""
        ...


class Exponential:
    """Capped exponential backoff with jitter; build it with :func:`exponential`.

    With ``v(n) = min(max, initial * multiplier ** (n - 1))`` for failed attempt ``n``
    (1-based), the delay before attempt ``n + 1`` is:

    ==================== ===================================================== ================
    ``jitter``           delay                                                 bounds
    ==================== ===================================================== ================
    ``"full"``           ``uniform(0, v(n))``                                  ``[0, v(n)]``
    ``"equal"``          ``v(n) / 2 + uniform(0, v(n) / 2)``                   ``[v(n)/2, v(n)]``
    ``"none"``           ``v(n)``                                              exactly ``v(n)``
    ``"decorrelated"``   ``min(max, uniform(initial, 3 * max(p, initial)))``   ``[initial, max]``
    ==================== ===================================================== ================

    where ``p`` is ``previous_delay``. Decorrelated jitter (AWS) grows from the previous delay,
    not from the attempt number, so ``multiplier`` does not apply to it; its first delay is
    uniform in ``[initial, 3 * initial]``.
    """

    __slots__ = ("_rand", "initial", "jitter", "max", "multiplier")

    def __init__(
        self,
        initial: float = 1.0,
        multiplier: float = 2.0,
        max: float = 60.0,
        jitter: Jitter = "full",
        *,
        rng: _random.Random | None = None,
    ) -> None:
        initial = positive_number("initial", initial, unit=" seconds")
        multiplier = at_least("multiplier", multiplier, 1)
        cap = at_least("max", max, initial, bound=f"initial ({initial!r})")
        check_one_of("jitter", jitter, _JITTERS)
        if rng is not None:
            check_instance("rng", rng, _random.Random, "random.Random")
        self.initial = initial
        self.multiplier = multiplier
        self.max = cap
        self.jitter: Jitter = jitter
        self._rand: Callable[[], float] = rng.random if rng is not None else _random.random

    def ceiling(self, attempt: int) -> float:
        """``v(attempt) = min(max, initial * multiplier ** (attempt - 1))``, overflow-safe."""
        n = attempt - 1 if attempt > 1 else 0
        try:
            v = self.initial * self.multiplier**n
        except OverflowError:
            return self.max
        return v if v < self.max else self.max

    def __call__(self, attempt: int, previous_delay: float) -> float:
        """The delay after attempt ``attempt`` failed (see the class docs for the formulas)."""
        j = self.jitter
        if j == "decorrelated":
            lo = self.initial
            hi = 3.0 * (previous_delay if previous_delay > lo else lo)
            d = lo + (hi - lo) * self._rand()
            return d if d < self.max else self.max
        v = self.ceiling(attempt)
        if j == "full":
            return v * self._rand()
        if j == "equal":
            return v / 2 + (v / 2) * self._rand()
        return v

    def __repr__(self) -> str:
        return (
            f"exponential(initial={self.initial}, multiplier={self.multiplier}, "
            f"max={self.max}, jitter={self.jitter!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Exponential):
            return NotImplemented
        return (self.initial, self.multiplier, self.max, self.jitter) == (
            other.initial,
            other.multiplier,
            other.max,
            other.jitter,
        )

    def __hash__(self) -> int:
        return hash((self.initial, self.multiplier, self.max, self.jitter))


class Constant:
    """The same delay before every retry; build it with :func:`constant`."""

    __slots__ = ("delay", "max")

    def __init__(self, delay: float) -> None:
        self.delay = at_least("delay", delay, 0, unit=" seconds")
        #: Caps ``retry_after`` hints too: a hint longer than ``delay`` is honoured (the
        #: retrier waits ``max(delay, hint)``), so the cap is infinite.
        self.max = math.inf

    def __call__(self, attempt: int, previous_delay: float) -> float:
        """Always ``delay``."""
        return self.delay

    def __repr__(self) -> str:
        return f"constant({self.delay})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Constant):
            return NotImplemented
        return self.delay == other.delay

    def __hash__(self) -> int:
        return hash(("constant", self.delay))


def exponential(
    initial: float = 1.0,
    multiplier: float = 2.0,
    max: float = 60.0,
    jitter: Jitter = "full",
    *,
    rng: _random.Random | None = None,
) -> Exponential:
    """Capped exponential backoff with jitter (full jitter by default).

    Args:
        initial: seconds, ``> 0``: the ceiling of the first delay (``"full"``: the first delay
            is uniform in ``[0, initial]``).
        multiplier: ``>= 1``: growth of the ceiling per attempt.
        max: seconds, ``>= initial``: no delay exceeds it, ``retry_after`` hints included.
        jitter: ``"full"`` (default), ``"equal"``, ``"decorrelated"`` or ``"none"``; the exact
            formulas and bounds are in :class:`Exponential`.
        rng: a :class:`random.Random` to draw from (reproducible tests); default: the
            ``random`` module's generator.

    Raises:
        TypeError, ValueError: naming the offending parameter.
    """
    return Exponential(initial, multiplier, max, jitter, rng=rng)


def constant(delay: float) -> Constant:
    """``delay`` seconds (``>= 0``) before every retry; ``retry_after`` hints are honoured."""
    return Constant(delay)
