"""The store protocol: the seam between policies and the state they share.

A policy never talks to Redis (or to a dict) itself: it asks its store for one atomic decision.
:class:`resilience.MemoryStore` decides in-process; :class:`resilience.RedisStore` decides in
one Lua script on Redis's own clock, so every process sharing the Redis sees one state.

Times cross this seam as integer **microseconds** (durations only: a store keeps its own clock,
and callers never send timestamps). Logical identities cross it as ``(name, key)`` pairs; how a
store turns them into storage keys is its own business (see :mod:`resilience.stores.keys`).

The protocol is split by feature (window limiter, circuit breaker, retry budget); a store
implements all of them. The same conformance suite (``tests/conformance``) runs against every
implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Store",
    "WindowLimit",
    "WindowOps",
    "WindowResult",
]


# --------------------------------------------------------------------------------------------
# Sliding-window rate limiter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """One "at most ``limit`` units per rolling ``window_us``" quota, identified by ``name``.

    ``window_us`` already includes the limiter's latency guard: an admission keeps its slot for
    that long.
    """

    name: str
    limit: int
    window_us: int


class WindowResult(NamedTuple):
    """The store's answer to :meth:`WindowOps.window_acquire`.

    Attributes:
        allowed: the request was admitted (possibly for a reserved slot ``wait_us`` from now).
        remaining: units still free in the tightest quota after this decision.
        wait_us: when allowed, how long to wait before using the (reserved) slot, 0 for now;
            when rejected, how long until the request could be admitted.
        token: identifies the admitted entry (to release a reservation); ``""`` when rejected.
    """

    allowed: bool
    remaining: int
    wait_us: int
    token: str


@runtime_checkable
class WindowOps(Protocol):
    """Atomic decisions of an exact sliding log with reservations (one entry per admission)."""

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
    ) -> WindowResult:
        """Admit ``costs[i]`` units under ``limits[i]`` for ``key``, for every ``i``, or none.

        Semantics, for each limit: the log holds entries ``(at, weight)``; an entry counts while
        ``now - window_us < at`` (entries may lie in the future: reservations). The new entry is
        placed at the earliest ``at >= now`` such that no half-open interval of length
        ``window_us`` containing it holds more than ``limit`` units, and not before the key's
        penalty ends. With ``max_wait_us < 0`` only ``at == now`` is accepted (try-acquire);
        otherwise any ``at <= now + max_wait_us`` is reserved. A rejection writes nothing.
        A cost is one entry carrying its weight.
        """
        ...

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """Remove the entries of request ``token`` (admitted with ``costs``), e.g. a reservation
        whose caller was cancelled. Idempotent."""
        ...

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """Admit nothing for ``key`` under these limits for ``duration_us`` from now.

        A longer existing penalty is kept (penalties only extend).
        """
        ...


# --------------------------------------------------------------------------------------------
# Circuit breaker  (section owned by the breaker; see resilience/policies/breaker)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Retry budget  (section owned by the retry budget; see resilience/policies/retry)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The whole protocol
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Store(WindowOps, Protocol):
    """Everything a store implements: the union of the per-feature protocols above."""

    #: A short label for logs and telemetry (never contains credentials).
    label: str
