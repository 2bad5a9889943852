"""Leased permits (``SlidingWindowLimiter(..., lease=k)``): one store admission for many callers.

A decision per call costs one round trip and one script run on the store; a fleet of busy
processes on one key saturates one Redis core long before the network. With ``lease=k`` a
process whose own demand is high takes several permits in one round trip and hands them to its
callers locally:

- **Recorded when taken.** A lease is ONE admission of weight ``n <= k`` through the store's
  ``window_acquire`` (try-only: a lease never reserves a future slot), in the shared log at the
  time it is taken. A permit therefore counts from when it was leased, never later than when it
  is used: the log never holds more than ``limit`` per window, exactly as without leases.
- **Horizon.** A leased permit is handed out for at most ``lease_horizon`` seconds after the
  lease was asked for (measured from before the round trip, so a use is never more than the
  horizon after its slot time). The limiter holds every slot ``window + guard + horizon``
  (``current_guard`` includes the horizon), so the *use* times of leased permits satisfy the
  limit per ``window + guard`` too, not only their slot times. Throughput is at most ``limit``
  per ``window + guard + horizon``.
- **Given back.** When the horizon ends the lease's entry is settled down to the permits used
  (``window_settle``; all unused: a refund): the unused units are free again for the whole
  fleet at once, and the waiters of this process are woken. A lease used up is simply closed.
  A settle that cannot reach the store leaves the entry to expire with its window (capacity
  wasted for one window, never over-admitted).
- **When.** Only under local demand: a caller leases when at least one other caller of this
  process is deciding on the same key (else it takes the ordinary per-call path: no lease,
  no settle). One lease in flight per key per process (single flight): callers arriving
  meanwhile wait for it. Its size follows demand: the callers waiting now, or more when the
  last lease was used up within its horizon (doubling), the permits the last lease actually
  used otherwise, at most ``k``.
- **Fairness.** A lease never takes more than half of the units the store last reported free
  for the key (at least 1), so a process cannot drain the window while other processes find
  room: near the limit leases shrink to single permits and the fleet decides per call again,
  first come, first served across processes. When the store refuses the lease (no room now)
  the waiting callers take the ordinary path (reservations, ``timeout``, ``RateLimited``).
- **Cancellation.** A caller cancelled while it waits for a lease leaves nothing behind: the
  lease goes on in the background and its unused permits are given back at its horizon. A
  permit is handed over synchronously, so a caller cannot be cancelled holding one.
- **Pauses.** :meth:`penalize` drops this process's leases on the key (unused permits given
  back); a pause recorded by another process stops this process's leases within a horizon.
- **Scope.** ``acquire``, ``try_acquire`` and the pipeline path take leased permits; ``reserve``
  and the ``settle`` option (estimates re-weighed per call) always ask the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from resilience import telemetry
from resilience.errors import ResilienceError
from resilience.pipeline import CallContext
from resilience.policies._validate import positive_int, positive_seconds
from resilience.policies.ratelimit._decision import Decision, _decision, _retrieve
from resilience.policies.ratelimit._reserve import _wake
from resilience.stores.base import WindowLimit

if TYPE_CHECKING:
    from resilience.policies.ratelimit._limiter import _WindowPolicy

__all__ = ["DEFAULT_HORIZON", "Leaser", "check_lease"]

logger = logging.getLogger("resilience")

#: Seconds a leased permit may be handed out after its lease was asked for (``lease_horizon``).
DEFAULT_HORIZON = 0.05


def check_lease(
    lease: object, horizon: object, limit: int, window: float
) -> tuple[int, float] | None:
    """The ``lease`` and ``lease_horizon`` options: ``(size, horizon)``, or ``None`` without a
    lease. Errors name the parameter."""
    if lease is None:
        if horizon is not None:
            raise ValueError("lease_horizon needs lease (the most permits one lease takes)")
        return None
    size = positive_int("lease", lease)
    if size < 2:
        raise ValueError(f"lease must be >= 2 (permits per lease; None: no leases), got {size}")
    if size > limit:
        raise ValueError(f"lease must be <= limit ({limit}), got {size}")
    h = DEFAULT_HORIZON if horizon is None else positive_seconds("lease_horizon", horizon)
    if h > window:
        raise ValueError(f"lease_horizon must be <= window ({window}), got {horizon}")
    return size, h


class _Lease:
    __slots__ = ("expires", "handle", "limits", "remaining", "size", "token", "used")

    def __init__(
        self, limits: tuple[WindowLimit, ...], size: int, token: str, expires: float, rem: int
    ) -> None:
        self.limits = limits  # as admitted (an adaptive guard may change the policy's)
        self.size = size
        self.token = token
        self.expires = expires
        self.remaining = rem
        self.used = 0
        self.handle: asyncio.TimerHandle | None = None


class Leaser:
    """The leases of one limiter in this process (see the module docs). Not thread-safe, like
    asyncio."""

    def __init__(self, policy: _WindowPolicy, size: int, horizon: float) -> None:
        self._p = policy
        self.size = size
        self.horizon = horizon
        self._leases: dict[str, _Lease] = {}  # key -> the lease handing out permits
        self._fetching: dict[str, asyncio.Future[bool]] = {}  # key -> the lease in flight
        self._demand: dict[str, int] = {}  # key -> callers deciding now
        self._next: dict[str, int] = {}  # key -> size hint from the last lease's use
        self._free: dict[str, int] = {}  # key -> units free at the store's last answer
        self._tasks: set[asyncio.Future[Any]] = set()  # settles in flight

    def _take(self, key: str, cost: int) -> _Lease | None:
        lease = self._leases.get(key)
        if lease is None or lease.used + cost > lease.size:
            return None
        if asyncio.get_running_loop().time() >= lease.expires:
            self._close(key, lease)
            return None
        lease.used += cost
        if lease.used == lease.size:  # used up: nothing to give back
            self._close(key, lease)
        return lease

    async def acquire(
        self, key: str, costs: tuple[int, ...], max_wait_us: int, ctx: CallContext | None
    ) -> Decision:
        """A permit from this process's lease on ``key``, a new lease when demand is high,
        else the ordinary per-call decision (``max_wait_us < 0``: try-only, a refusal is a
        ``Decision``, not ``RateLimited``)."""
        cost = costs[0]
        started = time.monotonic()
        lease = self._take(key, cost)
        if lease is not None:
            return self._granted(lease, ctx, started)
        demand = self._demand
        demand[key] = demand.get(key, 0) + 1
        try:
            for _ in range(3):  # a lease, or (no room, or others took it all) the store
                fut = self._fetching.get(key)
                if fut is None:
                    if demand[key] < 2:  # low local demand: the per-call path
                        break
                    fut = self._fetching[key] = asyncio.ensure_future(self._fetch(key))
                    fut.add_done_callback(_retrieve)
                # Cancelled here: the lease goes on in the background, nothing was taken.
                if not await asyncio.shield(fut):
                    break  # the store refused the lease: no room now
                lease = self._take(key, cost)
                if lease is not None:
                    return self._granted(lease, ctx, started)
            # Counted in the demand while it decides: concurrent callers then lease.
            if max_wait_us < 0:
                allowed, rem, wait_us, _ = await self._p.store.window_acquire(
                    self._p._limits, key, costs, -1
                )
                return _decision((allowed, rem, 0.0 if allowed else wait_us / 1e6))
            return await self._p._acquire(key, costs, max_wait_us, ctx, direct=True)
        finally:
            demand[key] -= 1
            if not demand[key]:
                del demand[key]

    def _granted(self, lease: _Lease, ctx: CallContext | None, started: float) -> Decision:
        if (ctx is None or ctx.observed) and telemetry.enabled():
            telemetry.limiter_decision(
                ctx,
                limiter=self._p.name,
                result="admitted",
                wait=0.0,
                duration=time.monotonic() - started,
            )
        return _decision((True, lease.remaining + lease.size - lease.used, 0.0))

    async def _fetch(self, key: str) -> bool:
        """Take one lease for ``key`` (try-only), sized by demand and bounded by fair share;
        whether the store granted it."""
        try:
            p = self._p
            loop = asyncio.get_running_loop()
            want = max(self._demand.get(key, 1), self._next.get(key, 0))
            free = self._free.get(key)
            share = self.size if free is None else max(free // 2, 1)
            n = min(want, self.size, share)
            limits = p._limits
            sent = loop.time()
            allowed, rem, _, token = await p.store.window_acquire(limits, key, (n,), -1)
            if not allowed and rem >= 2:  # fewer free than asked: half of what is free
                n = rem // 2
                sent = loop.time()
                allowed, rem, _, token = await p.store.window_acquire(limits, key, (n,), -1)
            self._free[key] = rem
            if not allowed:
                return False
            lease = _Lease(limits, n, token, sent + self.horizon, rem)
            old = self._leases.get(key)
            if old is not None:
                self._close(key, old)
            self._leases[key] = lease
            lease.handle = loop.call_at(lease.expires, self._close, key, lease)
            return True
        finally:
            self._fetching.pop(key, None)

    def _close(self, key: str, lease: _Lease) -> None:
        """End a lease: no more permits from it; unused ones are given back (settled)."""
        if self._leases.get(key) is lease:
            del self._leases[key]
        if lease.handle is not None:
            lease.handle.cancel()
            lease.handle = None
        # The next lease's size: double after a lease used up, else what this one used.
        self._next[key] = min(2 * lease.size if lease.used >= lease.size else lease.used, self.size)
        if lease.used < lease.size:
            task = asyncio.ensure_future(self._give_back(key, lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_retrieve)

    async def _give_back(self, key: str, lease: _Lease) -> None:
        p = self._p
        try:
            await p.store.window_settle(
                lease.limits, key, lease.token, (lease.size,), (lease.used,)
            )
        except ResilienceError as exc:
            logger.warning("rate limiter %r: could not give back leased permits: %s", p.name, exc)
            return
        free = self._free.get(key)
        if free is not None:
            self._free[key] = free + lease.size - lease.used
        _wake(p, key, [lease.limits[0].name])

    def drop(self, key: str) -> None:
        """Close this process's lease on ``key`` (a pause: no more permits from it)."""
        lease = self._leases.get(key)
        if lease is not None:
            self._close(key, lease)

    async def aclose(self) -> None:
        """Close every lease and wait until the unused permits are given back."""
        for key, lease in list(self._leases.items()):
            self._close(key, lease)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
