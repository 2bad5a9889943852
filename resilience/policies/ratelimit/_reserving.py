"""The limiter's side of reserve, settle and refund: the ``reserve`` method and the ``settle``
option, shared by :class:`resilience.SlidingWindowLimiter` and :func:`resilience.all_of` (the
semantics are in ``_reserve.py``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from resilience.pipeline import CallContext, KeySpec, resolve_key
from resilience.policies._validate import call_key, non_negative_seconds
from resilience.policies.ratelimit._decision import CostSpec, _call_costs, _retrieve
from resilience.policies.ratelimit._execute import call_and_learn
from resilience.policies.ratelimit._reserve import _FOREVER_US, Reserve, SettleFn
from resilience.stores.base import Store, WindowLimit, merge_slot_us, takes_merge

__all__ = ["ALONE", "MERGE", "Reserving", "SettleFn", "check_settle", "merges"]

T = TypeVar("T")
logger = logging.getLogger("resilience")


#: ``window_acquire``'s keyword for an admission nobody settles, and none for the rest: a
#: store that predates ``merge`` is never passed it (see :func:`merges`).
MERGE: dict[str, bool] = {"merge": True}
ALONE: dict[str, bool] = {}


def merges(store: object, limits: Sequence[WindowLimit]) -> bool:
    """Whether a policy passes ``merge=True`` for admissions it never settles: some limit
    merges (:func:`resilience.stores.base.merge_slot_us`) and the store takes the keyword."""
    return any(merge_slot_us(lim.limit, lim.window_us) for lim in limits) and takes_merge(store)


def check_settle(settle: object, param: str = "settle") -> SettleFn | None:
    """The ``settle`` option: ``None`` or a callable (``TypeError`` naming ``param``)."""
    if settle is not None and not callable(settle):
        raise TypeError(f"{param} must be a callable (result -> actual cost) or None")
    return settle


class Reserving:
    """What :class:`SlidingWindowLimiter <resilience.SlidingWindowLimiter>` and
    :func:`resilience.all_of` share for reserve, settle and refund (see the module docs)."""

    name: str
    store: Store
    _limits: tuple[WindowLimit, ...]
    _key: KeySpec
    _timeout: float | None
    _static_costs: tuple[int, ...] | None
    _cost_specs: tuple[CostSpec, ...]
    _adaptive: bool
    #: Admissions for now may share their slot's entry (a limit above MERGE_ABOVE, a store
    #: that takes ``merge``): see :func:`resilience.stores.base.merge_slot_us`.
    _merge: bool = False
    #: The ``settle`` option: reserve, call, settle to the actual cost.
    _settle: SettleFn | None = None
    #: Costs and settles are mappings by limiter name (:func:`resilience.all_of`), not ints.
    _by_name = False

    def _costs(self, cost: int | Mapping[str, int]) -> tuple[int, ...]:
        raise NotImplementedError  # pragma: no cover (see _WindowPolicy)

    async def _take(
        self,
        key: str,
        costs: tuple[int, ...],
        max_wait_us: int,
        ctx: CallContext | None,
        merge: bool = False,
    ) -> tuple[int, str, tuple[WindowLimit, ...]]:
        raise NotImplementedError  # pragma: no cover (see _WindowPolicy)

    async def _release(self, key: str, costs: tuple[int, ...], token: str) -> None:
        # Shielded, best effort: if it is lost, capacity is wasted until the entry leaves its
        # window, never over-admitted. Called while a CancelledError propagates: nothing
        # raised here may replace it.
        task = asyncio.ensure_future(self.store.window_release(self._limits, key, costs, token))
        task.add_done_callback(_retrieve)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # cancelled again: the release goes on in the background
        except Exception:
            logger.warning("rate limiter %r: could not release a cancelled reservation", self.name)

    async def _paused(self, key: str) -> int:
        raise NotImplementedError  # pragma: no cover

    def _answered(self, seconds: float) -> None:
        raise NotImplementedError  # pragma: no cover

    async def penalize(self, seconds: float, key: str | None = None) -> None:
        raise NotImplementedError  # pragma: no cover

    def reserve(
        self,
        cost: int | Mapping[str, int] = 1,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Reserve:
        """Reserve an estimate, to settle to the actual cost::

            async with limiter.reserve(estimate, key=tenant) as r:
                reply = await client.call(...)
                await r.settle(reply.usage.total_tokens)

        Entering the block admits ``cost`` as :meth:`acquire` does (the same ``timeout``, the
        same errors: :class:`resilience.RateLimited` at once when the slot lies beyond
        ``timeout``, ``ValueError`` when ``cost`` exceeds a limit; a wait cancelled gives the
        slot back) and yields a ``Reservation`` (``_reserve.py``). ``Reservation.settle``
        re-weighs the entry to the actual cost, keeping its slot time: below the estimate
        frees the difference at once (waiting callers of this process move up), above it is
        never refused (later callers wait). Leaving the block with an exception that proves
        the upstream did not bill the attempt (``not_billed``: a 429, a 529, a connection
        refused or never made, an inner refusal) refunds the reservation unless it was
        settled; any other exit without a settle (a timeout after the request was sent, any
        other error, a cancellation after admission, a stream abandoned midway) keeps the
        estimate. For a stream, settle from the final event's usage.

        For :func:`resilience.all_of`, ``cost`` is as in :meth:`acquire` (an int for every
        quota, or a mapping by limiter name) and ``Reservation.settle`` takes a mapping by
        limiter name (an int there raises ``TypeError``).
        """
        k = call_key(key)
        costs = self._costs(cost)
        if timeout is None:
            max_wait = _FOREVER_US
        else:
            max_wait = int(non_negative_seconds("timeout", timeout) * 1e6)
        return Reserve(self, k, costs, max_wait)

    async def _execute_settled(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """The pipeline path with a ``settle`` option: reserve the estimate (``cost``), call,
        settle to ``settle(result)``; a failure that was not billed is refunded."""
        spec = self._key
        if spec is None:
            key = ""
        elif type(spec) is str:
            key = spec
        else:
            key = call_key(resolve_key(spec, ctx), "key returned by the key callable")
        costs = self._static_costs or _call_costs(self._cost_specs, self._limits, ctx)
        bound = self._timeout
        if ctx.deadline is not None:
            left = max(ctx.deadline - time.monotonic(), 0.0)
            bound = left if bound is None else min(bound, left)
        max_wait = _FOREVER_US if bound is None else int(bound * 1e6)
        settle = self._settle
        assert settle is not None
        async with Reserve(self, key, costs, max_wait, ctx) as r:
            t_admit = time.monotonic()
            try:  # the same answer handling as execute (pause on hints, follow, guard)
                result = await call_and_learn(self, call, key, ctx)  # type: ignore[arg-type]
            except Exception:
                if self._adaptive:
                    self._answered(time.monotonic() - t_admit)
                raise
            if self._adaptive:
                self._answered(time.monotonic() - t_admit)
            await r.settle(settle(result))
            return result
