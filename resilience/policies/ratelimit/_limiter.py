"""The sliding-window rate limiter: exactly "``limit`` per rolling ``window``", fleet-wide.

Semantics (the same on every store):

- **Rate.** In every half-open interval ``(t - window, t]`` of the store's clock (Redis ``TIME``
  for :class:`resilience.RedisStore`), the admitted requests' costs add up to at most
  ``limit``. There is no burst allowance beyond that: ``limit`` requests may be admitted at
  once, and then the next one waits until the oldest leaves the window.
- **Guard.** Each admission keeps its slot for ``window + guard`` seconds. An upstream that
  enforces the same quota on its own clock sees our requests shifted by network and scheduling
  jitter; without a guard, an exact limiter overshoots the upstream's window at every boundary
  (measured with ``benchmarks/guard.py``: 8-18 % of requests drew 429 with ``guard=0`` across
  runs, none with :data:`DEFAULT_GUARD` = 0.15 s, at 92-94 % of the quota). By default
  (``guard=None``) the guard adapts: at least 0.15 s, and as long as the recent peak time from
  an admission to the call's answer (a cold SDK client's first requests land late), capped at
  1 s and a quarter of the window (see :mod:`resilience.policies.ratelimit._guard`).
  ``guard=<seconds>`` fixes it; ``guard=0`` counts exactly; throughput is at most ``limit``
  per ``window + guard``.
- **Cost.** A request of cost ``c`` is one entry of weight ``c`` (a token quota of 90 000 per
  minute costs what a request quota costs).
- **Waiting.** :meth:`acquire` never polls: the store reserves the earliest slot that is safe
  and the caller sleeps until it (one round trip per admitted call; first come, first served
  across the fleet). A caller that slept asks the store once more when it wakes whether the key
  is paused (:meth:`penalize`, e.g. another process drew a 429 with a wait hint while this
  caller slept): if so it gives its slot back and reserves again after the pause, within its
  timeout, instead of firing into the pause.
- **Cancellation.** A slot is used only by a call that went on: a task cancelled during the
  decision or while sleeping until its reserved slot gives the slot back (a shielded,
  idempotent release) before ``CancelledError`` propagates. Once the limiter has handed over
  to the protected call (the rest of the pipeline), the slot counts as used. A release that
  cannot reach the store is lost; the entry then expires with its window (capacity wasted,
  never over-admitted). A penalty is recorded even if its caller is cancelled meanwhile.
  One exception, by design: a merged admission (next item) cancelled while its decision was
  in flight to Redis stays counted for its window (capacity wasted, never over-admitted).
- **Memory.** Above :data:`~resilience.stores.base.MERGE_ABOVE` (10 000) units per window,
  once a key's log holds :data:`~resilience.stores.base.MERGE_FROM` (5 000) live entries,
  admissions that nobody settles share one entry per slot (``window / 5 000``, at least
  1 ms or 1 % of the window: 12 ms for a minute), counted from the slot's end: a key's log
  holds at most 5 000 such entries besides its 5 000, whatever the limit, and a unit frees
  at most one slot late, never early. A reservation keeps its own entry until half a
  second after it fell due (its waiter may give it back), then joins its slot's. Settled
  (``reserve``, ``settle``) and leased admissions keep an entry each. See
  :func:`~resilience.stores.base.merge_slot_us`.
- **Bounds.** ``limit`` (and so ``cost``) is at most :data:`MAX_LIMIT` (2**40): what a
  Redis store counts exactly in Lua's doubles. Keys and names are text (see
  :mod:`resilience.stores.base`).
- **Nothing is lost silently:** a request is admitted, waits, or fails with
  :class:`resilience.RateLimited` carrying ``retry_after``.

(This module runs a little over 400 lines: the one class that applies every option sits next
to the exact semantics of each, written once.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Mapping
from typing import TypeVar

from resilience import telemetry
from resilience.errors import RateLimited, ResilienceError
from resilience.pipeline import CallContext, KeySpec, PolicyBase
from resilience.policies._registry import Registered, held_off, note_limiter
from resilience.policies._validate import (
    MAX_LIMIT,
    call_key,
    check_instance,
    check_key,
    check_name,
    check_store,
    local_shortcut,
    min_duration,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from resilience.policies.ratelimit._decision import (
    FOREVER_US,
    CostSpec,
    Decision,
    LocalAdmit,
    _check_cost_spec,
    _decision,
    _finish,
    _static,
)
from resilience.policies.ratelimit._execute import execute
from resilience.policies.ratelimit._follow import Follower, quota_names
from resilience.policies.ratelimit._guard import DEFAULT_GUARD, AutoGuard, adapt, widened
from resilience.policies.ratelimit._lease import Leaser, check_lease
from resilience.policies.ratelimit._reserve import wait_slot
from resilience.policies.ratelimit._reserving import (
    ALONE,
    MERGE,
    Reserving,
    SettleFn,
    check_settle,
    merges,
)
from resilience.stores import FallbackMode, with_fallback
from resilience.stores.base import Store, WindowLimit

__all__ = ["DEFAULT_GUARD", "MAX_LIMIT", "Decision", "SlidingWindowLimiter"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

_FOREVER_US = FOREVER_US
# The shortest window: stores count in whole microseconds (window_us >= 1 even with guard=0).
_MIN_WINDOW = 1e-6


class _WindowPolicy(Reserving, Registered, PolicyBase):
    """What a single limiter and a combination of limiters share: the whole public behaviour."""

    name: str
    store: Store
    _limits: tuple[WindowLimit, ...]
    _cost_specs: tuple[CostSpec, ...]
    _static_costs: tuple[int, ...] | None
    _key: KeySpec
    _timeout: float | None
    _admit: LocalAdmit | None
    # Per limit: its window in seconds and its adaptive guard (None: a fixed guard).
    _windows: tuple[float, ...]
    _guards: tuple[AutoGuard | None, ...]
    _adaptive: bool
    _follow: Follower | None
    #: Leased permits (``lease=``, see ``_lease.py``); ``None``: one decision per call.
    _lease: Leaser | None = None

    def _answered(self, seconds: float) -> None:
        """An admitted call answered ``seconds`` after its admission: adapt the guards."""
        limits = adapt(self._limits, self._windows, self._guards, seconds)
        if limits is not None:
            self._limits = limits

    @property
    def current_guard(self) -> float:
        """The guard (seconds) in force: ``guard``, or where it adapts (``guard=None``) the
        widest after the calls seen so far."""
        pairs = zip(self._limits, self._windows, strict=True)
        return max(lim.window_us / 1e6 - w for lim, w in pairs)

    def _costs(self, cost: int | Mapping[str, int]) -> tuple[int, ...]:
        """Per-limit costs of a direct call: one int for every quota, or a mapping by name."""
        if cost == 1 and type(cost) is int:  # the common case, validated once
            return self._unit_costs
        if isinstance(cost, Mapping):
            unknown = set(cost) - {lim.name for lim in self._limits}
            if unknown:
                raise ValueError(f"cost names unknown limiters: {sorted(unknown)}")
            costs = tuple(cost.get(lim.name, 1) for lim in self._limits)
        else:
            costs = (cost,) * len(self._limits)
        for c, lim in zip(costs, self._limits, strict=True):
            positive_int("cost", c)
            if c > lim.limit:
                raise ValueError(f"cost must be <= limit ({lim.limit}) of {lim.name!r}, got {c}")
        return costs

    async def try_acquire(
        self, key: str | None = None, cost: int | Mapping[str, int] = 1
    ) -> Decision:
        """Admit ``cost`` units now, or refuse at once (nothing is recorded for a refusal).

        ``key``: a str, or ``None`` for the default key; anything else is a ``TypeError``.
        """
        k = call_key(key)
        if (k not in self._seen or self._held_until) and (held := note_limiter(self, k)) > 0:
            return _decision((False, 0, held))
        if self._lease is not None:
            return await self._lease.acquire(k, self._costs(cost), -1, None)
        allowed, remaining, wait_us, _ = await self.store.window_acquire(
            self._limits, k, self._costs(cost), -1, **(MERGE if self._merge else ALONE)
        )  # never released: may share its slot's entry (see _take)
        return _decision((allowed, remaining, 0.0 if allowed else wait_us / 1e6))

    @functools.cached_property
    def _unit_costs(self) -> tuple[int, ...]:
        return (1,) * len(self._limits)

    async def acquire(
        self,
        key: str | None = None,
        cost: int | Mapping[str, int] = 1,
        timeout: float | None = None,
    ) -> Decision:
        """Wait until ``cost`` units are admitted, for at most ``timeout`` seconds.

        One store round trip reserves the earliest safe slot; the call then sleeps until it.
        Raises :class:`resilience.RateLimited` at once when that slot lies beyond ``timeout``
        (``timeout=0`` means: only if free now). If the task is cancelled during the decision
        or while it sleeps, the reserved slot is released before ``CancelledError``
        propagates. ``key``: a str, or ``None`` for the default key.
        """
        k = call_key(key)
        costs = self._costs(cost)
        if timeout is None:
            max_wait = _FOREVER_US
        else:
            max_wait = int(non_negative_seconds("timeout", timeout) * 1e6)
        return await self._acquire(k, costs, max_wait, None)

    async def _acquire(
        self,
        key: str,
        costs: tuple[int, ...],
        max_wait_us: int,
        ctx: CallContext | None,
        direct: bool = False,
    ) -> Decision:
        if self._lease is not None and not direct:
            return await self._lease.acquire(key, costs, max_wait_us, ctx)
        remaining, _, _ = await self._take(key, costs, max_wait_us, ctx, merge=self._merge)
        return _decision((True, remaining, 0.0))

    async def _take(
        self,
        key: str,
        costs: tuple[int, ...],
        max_wait_us: int,
        ctx: CallContext | None,
        merge: bool = False,
    ) -> tuple[int, str, tuple[WindowLimit, ...]]:
        """Admit ``costs`` (waiting for a reserved slot, woken early by settles, re-checking a
        pause on waking); ``(remaining, token, the limits it was admitted under)``. ``merge``:
        nobody settles it (an admission for now may share its slot's entry: ``merges``)."""
        observed = (ctx is None or ctx.observed) and telemetry.enabled()
        started = time.monotonic() if observed or max_wait_us > 0 else 0.0
        waited = 0.0
        if key not in self._seen or self._held_until:  # registry; an operator's hold
            max_wait_us = await held_off(self, key, max_wait_us)
        while True:
            limits = self._limits
            allowed, remaining, wait_us, token = await self.store.window_acquire(
                limits, key, costs, max_wait_us, **(MERGE if merge else ALONE)
            )
            if not allowed:
                if observed:
                    telemetry.limiter_decision(
                        ctx,
                        limiter=self.name,
                        result="rejected",
                        wait=0.0,
                        duration=time.monotonic() - started,
                    )
                raise RateLimited(self.name, wait_us / 1e6)
            if wait_us <= 0:
                break
            waited += wait_us / 1e6
            try:
                await wait_slot(self, limits, key, costs, token, wait_us)
                if self._limits is not limits:  # the guard moved while this caller slept
                    await asyncio.sleep(widened(limits, self._limits))
                paused = await self._paused(key)
            except asyncio.CancelledError:
                await self._release(key, costs, token)
                raise
            if paused <= 0:
                break
            # A pause landed while this caller slept: its slot lies inside it. Give the slot
            # back and reserve again (after the pause), within what is left of the wait bound
            await self._release(key, costs, token)
            if max_wait_us != _FOREVER_US:
                spent = int((time.monotonic() - started) * 1e6)
                max_wait_us = max(max_wait_us - spent, 0)
        if observed:
            telemetry.limiter_decision(
                ctx,
                limiter=self.name,
                result="waited" if waited > 0 else "admitted",
                wait=waited,
                duration=time.monotonic() - started,
            )
        return remaining, token, limits

    async def _paused(self, key: str) -> int:
        try:
            return await self.store.window_paused(self._limits, key)
        except ResilienceError:
            return 0

    async def penalize(self, seconds: float, key: str | None = None) -> None:
        """Admit nothing for ``key`` for ``seconds``, for everyone sharing the store.

        Use it when the upstream answered 429 with ``Retry-After``: the whole fleet pauses
        instead of each worker discovering the 429 on its own. Penalties only extend. The
        penalty is recorded even if the calling task is cancelled meanwhile (it waits for the
        store, then ``CancelledError`` propagates).
        """
        s = non_negative_seconds("seconds", seconds)
        k = call_key(key)
        if self._lease is not None:
            self._lease.drop(k)  # no more permits from this process's lease on the key
        await _finish(self.store.window_penalize(self._limits, k, math.ceil(s * 1e6)))

    execute = execute


class SlidingWindowLimiter(_WindowPolicy):
    """At most ``limit`` units per rolling ``window`` seconds, for each key, fleet-wide.

    Args:
        limit: units admitted per window (requests, or tokens with ``cost``), at most
            :data:`MAX_LIMIT` (2**40).
        window: the window in seconds; sub-second windows work (at least 1 µs).
        store: where the log lives: :class:`resilience.RedisStore` to share it across
            processes; default, the process-wide :class:`resilience.MemoryStore`. Limiters
            with the same ``name`` in the same store share their state: that is how a fleet
            shares a quota, so give distinct quotas distinct names.
        name: identifies the quota in the store and in telemetry.
        guard: seconds each admission keeps its slot beyond the window (see the module
            docs); ``None`` (default) adapts it to how long calls take to answer, from
            :data:`DEFAULT_GUARD` (0.15 s) up to 1 s; ``0`` counts exactly.
        key: as a pipeline policy or decorator: the key of each call (a str, or a callable
            over the call's arguments returning a str, e.g. per tenant). Default: one key.
            Keys are text: a lone surrogate (``"\\udcff"``) is a ``ValueError``, a key
            callable returning anything but a str a ``TypeError``, at the call.
        cost: as a pipeline policy or decorator (alone or inside :func:`all_of`): units per
            call (an int, or a callable over the call's arguments, e.g. estimated tokens).
            Default 1.
        timeout: as a pipeline policy or decorator: the longest a call waits for a permit
            before :class:`resilience.RateLimited` (the call's deadline also bounds it).
            Default: no bound beyond the deadline.
        fallback: what to do when the store is unreachable: ``"local"`` (default: this
            process admits its fair share of ``limit``: shares add up to at most ``limit``
            across the processes it saw, see :class:`resilience.FallbackStore`), ``"allow"``
            (admit) or
            ``"deny"`` (raise :class:`resilience.StoreUnavailable`); see
            :class:`resilience.FallbackStore`.
        follow_upstream: follow the rate-limit headers of the upstream's answers (where the
            limiter sees them: the httpx transport, the aiohttp middleware, an SDK's error):
            a quota at 0 pauses the key until its reset, a provider limit below ``limit``
            is adopted fleet-wide (see :mod:`resilience.policies.ratelimit._follow`).
            Default ``True``.
        upstream_quota: the provider quota this limiter follows (``"requests"``,
            ``"tokens"``, ``"input-tokens"``, ...). Default: the one named like the limiter,
            else ``"requests"`` for cost 1, ``"tokens"`` otherwise.
        upstream_window: the window (seconds) of the provider's quotas when its headers do
            not say (``RateLimit-Policy``'s ``w`` does). Default: a minute (OpenAI,
            Anthropic).
        settle: as a policy: the actual cost from the call's result (``lambda r:
            r.usage.total_tokens``); ``cost`` is then an estimate, settled (see ``reserve``).
        lease: leased permits, opt-in: the most permits (>= 2, <= ``limit``) this process takes
            in one round trip when several of its callers decide on a key at once, handed to
            them locally; unused ones are given back. Each lease is recorded in the shared log
            when taken, so the window stays exact; a process takes at most half the free units
            (fairness across processes). Default ``None``: one decision per call. See
            :mod:`resilience.policies.ratelimit._lease` and docs/ratelimit.md.
        lease_horizon: the longest a leased permit waits to be used, seconds (<= ``window``,
            default 0.05); slots are held ``window + guard + lease_horizon`` so use times
            are exact too. Only with ``lease``.
        merge: let admissions nobody settles share their slot's entry on a busy key (a limit
            above 10 000 per window, a log of 5 000 live entries or more): memory per key
            bounded whatever the limit, at a higher Redis CPU per decision on that key.
            Default ``True``; ``False`` keeps an entry per admission (memory grows with the
            limit). See docs/ratelimit.md, "Memory".
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        store: Store | None = None,
        name: str = "default",
        guard: float | None = None,
        key: KeySpec = None,
        cost: CostSpec = 1,
        timeout: float | None = None,
        fallback: FallbackMode = "local",
        follow_upstream: bool = True,
        upstream_quota: str | None = None,
        upstream_window: float = 60.0,
        settle: SettleFn | None = None,
        lease: int | None = None,
        lease_horizon: float | None = None,
        merge: bool = True,
    ) -> None:
        self.limit = positive_int("limit", limit)
        if self.limit > MAX_LIMIT:
            raise ValueError(
                f"limit must be <= MAX_LIMIT = 2**40 ({MAX_LIMIT}, the most a Redis store "
                f"counts exactly), got {limit}"
            )
        self.window = min_duration("window", window, _MIN_WINDOW)
        self.guard = DEFAULT_GUARD if guard is None else non_negative_seconds("guard", guard)
        leased = check_lease(lease, lease_horizon, self.limit, self.window)
        held = self.guard + (0.0 if leased is None else leased[1])  # a leased permit's wait
        self._windows = (self.window,)
        self._guards = (AutoGuard(held, self.window) if guard is None else None,)
        self._adaptive = guard is None
        self.name = check_name(name)
        self.store = with_fallback(check_store(store, "window_acquire"), fallback)
        self._admit = local_shortcut(self.store, "window_admit")
        self._key = check_key(key)
        self.cost = _check_cost_spec(cost)
        if isinstance(self.cost, int) and self.cost > self.limit:
            raise ValueError(f"cost must be <= limit ({self.limit}), got {self.cost}")
        self._cost_specs = (self.cost,)
        self._static_costs = _static(self._cost_specs)
        self._timeout = None if timeout is None else non_negative_seconds("timeout", timeout)
        self._settle = check_settle(settle)
        window_us = round((self.window + held) * 1e6)
        self._limits = (WindowLimit(self.name, self.limit, window_us),)
        self.merge = check_instance("merge", merge, bool)
        self._merge = merge and merges(self.store, self._limits)
        self.follow_upstream = check_instance("follow_upstream", follow_upstream, bool)
        self.upstream_quota = (
            None if upstream_quota is None else check_name(upstream_quota, "upstream_quota")
        )
        self.upstream_window = positive_seconds("upstream_window", upstream_window)
        self._follow = self._follower()
        if leased is not None:
            self._lease = Leaser(self, *leased)

    def _follower(self) -> Follower | None:
        if not self.follow_upstream:
            return None
        names = quota_names(self.name, self.upstream_quota, self.cost == 1)
        return Follower(
            self.name, self.store, self._limits, self._windows, (names,), self.upstream_window
        )

    def __repr__(self) -> str:
        return (
            f"SlidingWindowLimiter(limit={self.limit}, window={self.window}, "
            f"name={self.name!r}, guard={self.guard}, store={self.store!r})"
        )
