"""The fleet-wide concurrency limit: at most ``max_in_flight`` calls at once, per key.

Semantics (the same on every store; ``docs/concurrency.md`` explains the why):

- **Limit.** At most ``max_in_flight`` permits of a ``(name, key)`` are held at once by every
  process sharing the store. A call holds a permit from admission until it returns, raises or
  is cancelled.
- **Lease.** A permit is a lease in the store (default :data:`DEFAULT_LEASE` = 10 s),
  renewed every third of a lease while the call runs (a timer; a call shorter than that costs
  no renewal). A process that dies (kill -9, OOM, a lost machine) stops renewing: its permits
  come back within one lease. A permit whose lease lapsed while its call still ran (the
  process stalled longer than a lease, or Redis restarted empty) is held again by the next
  renewal, even above the limit: the count tells the truth about the calls running.
- **Waiting.** Waiters queue first come first served across the fleet (a FIFO queue in the
  store, with a lease of its own per waiter, so a crashed waiter at its head is skipped
  within one lease). Nobody polls or blocks in the store: a release tells the waiters whose
  turn it is (pub/sub on Redis), and each waiter also asks again at a bounded time (the
  earliest lease that could free a slot, at most a third of a lease). A waiter gives up at
  its ``timeout`` or the call's deadline with :class:`resilience.ConcurrencyLimited` (a
  :class:`resilience.RateLimited`); ``timeout=0`` means: only if a permit is free now.
- **Cancellation and failure.** A call that fails or is cancelled (before, while waiting,
  during the call or during the release) gives its permit or its place back at once, in a
  shielded step; a release that cannot reach the store is bounded by the lease.
- **Store outage.** ``fallback`` as for the limiter: ``"local"`` takes a fair share of
  ``max_in_flight`` (the shares of the processes seen add up to at most it), ``"allow"``
  admits, ``"deny"`` raises :class:`resilience.StoreUnavailable` (to a new caller: one
  already queued waits on and asks again, within its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from resilience import telemetry
from resilience.errors import ConcurrencyLimited, StoreUnavailable
from resilience.pipeline import CallContext, KeySpec, PolicyBase, resolve_key
from resilience.policies._registry import Registered, note_concurrency
from resilience.policies._validate import (
    MAX_LIMIT,
    MAX_SECONDS,
    call_key,
    check_key,
    check_name,
    check_store,
    min_duration,
    non_negative_seconds,
    positive_int,
)
from resilience.policies.concurrency._lease import Lease, give_back, retrieve
from resilience.policies.concurrency._waiters import Waiters
from resilience.stores import FallbackMode, with_fallback
from resilience.stores.base import ConcurrencyReply, ConcurrencySpec, Store

__all__ = ["DEFAULT_LEASE", "ConcurrencyLimit", "Permit"]

T = TypeVar("T")

#: Default lease of a permit, seconds: renewed every ~3.3 s while the call runs; a crashed
#: process's permits come back within it.
DEFAULT_LEASE = 10.0
#: The shortest lease (renewed every third of it).
MIN_LEASE = 0.03
_monotonic = time.monotonic


class Permit:
    """What ``async with limit.acquire(...)`` holds: a permit, given back on exit.

    Attributes:
        key: the key the permit was taken for.
        waited: seconds spent asking for it (0 when granted at once).
    """

    __slots__ = ("_ctx", "_lease", "_limit", "_timeout", "key", "waited")

    def __init__(self, limit: ConcurrencyLimit, key: str, timeout: float | None) -> None:
        self._limit = limit
        self._timeout = timeout
        self._lease: Lease | None = None
        self.key = key
        self.waited = 0.0

    async def __aenter__(self) -> Permit:
        if self._lease is not None:
            raise RuntimeError("a Permit is entered once; call acquire() again for another")
        self._lease = await self._limit._take(self.key, self._timeout, None, self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lease is not None:
            await self._limit._give_back(self._lease, reraise=exc is None)


class ConcurrencyLimit(Registered, PolicyBase):
    """At most ``max_in_flight`` calls at once per key, across every process sharing the store.

    Use it as a pipeline policy, a decorator (``@limit``), or around a block::

        limit = ConcurrencyLimit(8, store=RedisStore.from_url(url), name="gpt")
        async with limit.acquire(key="tenant-1"):
            ...

    Args:
        max_in_flight: permits per key (at least 1, at most 2**40).
        store: where permits and the queue live: :class:`resilience.RedisStore` to share
            them across processes; default, the process-wide :class:`resilience.MemoryStore`.
            Limits with the same ``name`` in the same store share their permits.
        name: identifies the limit in the store and in telemetry.
        key: as a pipeline policy or decorator: the key of each call (a str, or a callable
            over the call's arguments returning one). Default: one key.
        timeout: the longest a call waits for a permit before
            :class:`resilience.ConcurrencyLimited` (the call's deadline also bounds it);
            ``0``: only if one is free now. Default: no bound beyond the deadline.
        lease: seconds a permit (and a waiter's place) lives in the store unless renewed;
            renewed every third of it while the call runs. A crashed process's permits come
            back within it. Default :data:`DEFAULT_LEASE` (10 s), at least 0.03 s.
        fallback: when the store is unreachable: ``"local"`` (default: a fair share of
            ``max_in_flight`` per process, adding up to at most it), ``"allow"`` or
            ``"deny"`` (raise :class:`resilience.StoreUnavailable`); see
            :class:`resilience.FallbackStore`.
    """

    def __init__(
        self,
        max_in_flight: int,
        *,
        store: Store | None = None,
        name: str = "default",
        key: KeySpec = None,
        timeout: float | None = None,
        lease: float = DEFAULT_LEASE,
        fallback: FallbackMode = "local",
    ) -> None:
        self.max_in_flight = positive_int("max_in_flight", max_in_flight)
        if self.max_in_flight > MAX_LIMIT:
            raise ValueError(f"max_in_flight must be <= 2**40 ({MAX_LIMIT}), got {max_in_flight}")
        self.name = check_name(name)
        self.store: Store = with_fallback(check_store(store, "concurrency_acquire"), fallback)
        self._key = check_key(key)
        self.timeout = None if timeout is None else non_negative_seconds("timeout", timeout)
        self.lease = min_duration("lease", lease, MIN_LEASE, "(it is renewed every third)")
        if self.lease > MAX_SECONDS:
            raise ValueError(f"lease must be <= {MAX_SECONDS:g} seconds, got {lease!r}")
        self._spec = ConcurrencySpec(self.name, self.max_in_flight, round(self.lease * 1e6))
        self._waiters = Waiters(self.store)
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit(max_in_flight={self.max_in_flight}, name={self.name!r}, "
            f"lease={self.lease}, store={self.store!r})"
        )

    def acquire(self, key: str | None = None, timeout: float | None = None) -> Permit:
        """A permit for ``key`` as an async context manager: ``async with
        limit.acquire(key=...)`` waits for it (at most ``timeout`` seconds, default the
        limit's ``timeout``), holds it for the block and gives it back on exit, whatever
        happens. Raises :class:`resilience.ConcurrencyLimited` when none came in time."""
        bound = self.timeout if timeout is None else non_negative_seconds("timeout", timeout)
        return Permit(self, call_key(key), bound)

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Pipeline policy: wait for a permit (bounded by ``timeout`` and the call's deadline),
        run the call holding it, give it back."""
        spec = self._key
        if spec is None:
            key = ""
        elif type(spec) is str:
            key = spec
        else:
            key = call_key(resolve_key(spec, ctx), "key returned by the key callable")
        bound = self.timeout
        if ctx.deadline is not None:
            left = max(ctx.deadline - _monotonic(), 0.0)
            bound = left if bound is None else min(bound, left)
        lease = await self._take(key, bound, ctx, None)
        try:
            result = await call()
        except BaseException:
            await self._give_back(lease, reraise=False)
            raise
        await self._give_back(lease, reraise=True)
        return result

    # ------------------------------------------------------------------ taking a permit

    async def _take(
        self, key: str, bound: float | None, ctx: CallContext | None, permit: Permit | None
    ) -> Lease:
        if key not in self._seen:  # the operator tools' registry (docs/operations.md)
            note_concurrency(self, key)
        observed = (ctx is None or ctx.observed) and telemetry.enabled()
        started = _monotonic()
        r = await self.store.concurrency_acquire(self._spec, key, "", bound != 0)
        waited = False
        if not r.granted:
            if not r.token:
                self._refused(ctx, observed, started, False)
            waited = True
            r = await self._wait(key, r, started, bound, ctx, observed)
        lease = Lease(self.store, self._spec, key, r.token)
        if observed:
            lease.counted = True
            telemetry.concurrency_in_flight(self.name, 1)
            wait = _monotonic() - started
            telemetry.concurrency_decision(
                ctx, limit=self.name, acquired=True, wait=wait, waited=waited
            )
        if permit is not None and waited:
            permit.waited = _monotonic() - started
        return lease

    def _refused(
        self, ctx: CallContext | None, observed: bool, started: float, waited: bool
    ) -> None:
        wait = _monotonic() - started
        if observed:
            telemetry.concurrency_decision(
                ctx, limit=self.name, acquired=False, wait=wait, waited=waited
            )
        raise ConcurrencyLimited(self.name, self.max_in_flight, wait if waited else 0.0)

    async def _wait(
        self,
        key: str,
        r: ConcurrencyReply,
        started: float,
        bound: float | None,
        ctx: CallContext | None,
        observed: bool,
    ) -> ConcurrencyReply:
        """Wait in the queue under ticket ``r.token`` until granted; give the place back on
        any way out but a grant."""
        store, spec = self.store, self._spec
        ticket = r.token
        tag = store.concurrency_tag(self.name, key)
        deadline = None if bound is None else started + bound
        waiter = self._waiters.add(tag, ticket)
        if observed:
            telemetry.concurrency_waiting(self.name, 1)
        try:
            while True:
                delay = r.wait_us / 1e6
                if deadline is not None:
                    left = deadline - _monotonic()
                    if left <= 0:
                        self._refused(ctx, observed, started, True)
                    delay = min(delay, left)
                await waiter.sleep(delay)
                try:
                    r = await store.concurrency_acquire(spec, key, ticket, True)
                except StoreUnavailable:
                    # Even with fallback="deny" a waiter only waits on: it asks again after
                    # a third of a lease (its place expires with the lease, and is taken
                    # again at the tail if the store forgot it).
                    r = r._replace(granted=False, wait_us=spec.lease_us // 3)
                    continue
                if r.token != ticket:  # a FallbackStore moved the ticket (or granted "A")
                    self._release_later(key, ticket)
                    if not r.token:
                        self._refused(ctx, observed, started, True)
                    self._waiters.rename(tag, ticket, r.token)
                    ticket = r.token
                if r.granted:
                    return r
        except BaseException:
            await self._release_shielded(key, ticket)
            raise
        finally:
            self._waiters.remove(tag, ticket)
            if observed:
                telemetry.concurrency_waiting(self.name, -1)

    # ------------------------------------------------------------------ giving back

    async def _give_back(self, lease: Lease, *, reraise: bool) -> None:
        if lease.counted:
            lease.counted = False
            telemetry.concurrency_in_flight(self.name, -1)
        await give_back(lease, reraise=reraise)

    def _release_later(self, key: str, token: str) -> None:
        task = asyncio.ensure_future(self.store.concurrency_release(self._spec, key, token))
        task.add_done_callback(retrieve)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_shielded(self, key: str, token: str) -> None:
        task = asyncio.ensure_future(self.store.concurrency_release(self._spec, key, token))
        task.add_done_callback(retrieve)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Cancelled again (the release goes on), or the store failed (the lease frees it).
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
