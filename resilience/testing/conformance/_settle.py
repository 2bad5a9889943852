"""Settle conformance: :meth:`resilience.stores.base.WindowOps.window_settle` and
:meth:`~resilience.stores.base.WindowOps.window_advance`, directly and through
``SlidingWindowLimiter.reserve``. Windows are long (nothing leaves them during a test) unless a
test is about leaving the window; each test says what it proves."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from resilience import SlidingWindowLimiter, all_of
from resilience.stores.base import Store, WindowLimit

__all__ = ["SettleConformance"]

_W = 30_000_000  # 30 s: nothing leaves the window during a test


async def _admit(store: Store, lim: WindowLimit, cost: int, key: str = "") -> str:
    r = await store.window_acquire((lim,), key, (cost,), -1)
    assert r.allowed, (cost, r)
    return r.token


async def _free(store: Store, lim: WindowLimit, key: str = "") -> int:
    """Units free now: the largest cost a try-acquire admits (found without writing: a
    refused try writes nothing, an admitted one of cost ``c`` is released at once)."""
    lo, hi = 0, lim.limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        r = await store.window_acquire((lim,), key, (mid,), -1)
        if r.allowed:
            await store.window_release((lim,), key, (mid,), r.token)
            lo = mid
        else:
            hi = mid - 1
    return lo


class SettleConformance:
    """Reserve, settle and refund (a ``store`` fixture gives the store)."""

    async def test_settle_down_frees_the_difference_at_once(self, store: Store) -> None:
        lim = WindowLimit("sd", 10, _W)
        token = await _admit(store, lim, 8)
        assert await store.window_settle((lim,), "", token, (8,), (3,))
        assert await _free(store, lim) == 7

    async def test_settle_up_is_accepted_past_the_limit(self, store: Store) -> None:
        # Spent units are recorded even beyond the limit; later requests wait for them.
        lim = WindowLimit("su", 10, _W)
        token = await _admit(store, lim, 4)
        assert await store.window_settle((lim,), "", token, (4,), (15,))
        r = await store.window_acquire((lim,), "", (1,), -1)
        assert not r.allowed
        assert _W - 2_000_000 < r.wait_us <= _W  # until that entry leaves the window
        assert r.remaining == 0

    async def test_refund_removes_the_entry(self, store: Store) -> None:
        lim = WindowLimit("rf", 10, _W)
        token = await _admit(store, lim, 10)
        assert await store.window_settle((lim,), "", token, (10,), (0,))
        assert await _free(store, lim) == 10
        assert not await store.window_settle((lim,), "", token, (10,), (5,))  # gone: no-op
        assert await _free(store, lim) == 10

    async def test_reweighing_stays_exact_one_to_k_and_back(self, store: Store) -> None:
        # The Redis log keeps weight 1 as a bare member and the extra weight in a counter:
        # 1 -> 7 -> 1 -> 9 -> 0 must leave the books as they were, with neighbours around.
        lim = WindowLimit("exact", 20, _W)
        other = await _admit(store, lim, 1)
        heavy = await _admit(store, lim, 3)
        token = await _admit(store, lim, 1)
        weights = [1, 7, 1, 9, 2, 0]
        for old, new in itertools.pairwise(weights):
            assert await store.window_settle((lim,), "", token, (old,), (new,))
            assert await _free(store, lim) == 20 - 1 - 3 - new
        assert await store.window_settle((lim,), "", heavy, (3,), (1,))
        assert await _free(store, lim) == 18
        await store.window_release((lim,), "", (1,), other)
        assert await _free(store, lim) == 19

    async def test_a_settle_with_a_stale_weight_changes_nothing(self, store: Store) -> None:
        # Two settles of one entry at once: the one that finds the weight it was told wins, the
        # other changes nothing, so the books never drift.
        lim = WindowLimit("race", 100, _W)
        token = await _admit(store, lim, 50)
        a, b = await asyncio.gather(
            store.window_settle((lim,), "", token, (50,), (20,)),
            store.window_settle((lim,), "", token, (50,), (30,)),
        )
        assert [a, b].count(True) == 1
        assert await _free(store, lim) == (80 if a else 70)
        assert not await store.window_settle((lim,), "", "nosuchtoken", (1,), (0,))

    async def test_settle_after_the_window_is_a_no_op(self, store: Store) -> None:
        lim = WindowLimit("late", 5, 300_000)  # 0.3 s
        token = await _admit(store, lim, 5)
        await asyncio.sleep(0.45)
        assert not await store.window_settle((lim,), "", token, (5,), (50,))
        assert await _free(store, lim) == 5

    async def test_all_of_settles_each_quota_to_its_own_actual(self, store: Store) -> None:
        lims = (WindowLimit("in", 100, _W), WindowLimit("out", 100, _W), WindowLimit("rq", 3, _W))
        r = await store.window_acquire(lims, "k", (60, 40, 1), -1)
        assert r.allowed
        assert await store.window_settle(lims, "k", r.token, (60, 40, 1), (10, 90, 1))
        assert [await _free(store, lim, "k") for lim in lims] == [90, 10, 2]
        assert await store.window_settle(lims, "k", r.token, (10, 90, 1), (0, 0, 0))
        assert [await _free(store, lim, "k") for lim in lims] == [100, 100, 3]

    async def test_advance_moves_a_reservation_up_when_units_are_freed(self, store: Store) -> None:
        lim = WindowLimit("adv", 10, _W)
        first = await _admit(store, lim, 10)
        queued = await store.window_acquire((lim,), "", (5,), 2 * _W)
        assert queued.allowed
        assert queued.wait_us > _W - 2_000_000
        # Nothing freed: the reservation keeps its slot (never a later one).
        left = await store.window_advance((lim,), "", queued.token, (5,))
        assert 0 < left <= queued.wait_us
        assert await store.window_settle((lim,), "", first, (10,), (4,))
        assert await store.window_advance((lim,), "", queued.token, (5,)) == 0
        assert await _free(store, lim) == 1  # 4 + 5 of 10: the entry moved, not copied
        assert await store.window_advance((lim,), "", "nosuchtoken", (5,)) == -1
        assert await store.window_advance((lim,), "", queued.token, (6,)) == -1  # wrong weight

    async def test_reserve_settle_wakes_a_waiting_caller(self, store: Store) -> None:
        # Through the limiter: a caller queued behind a full window is admitted as soon as a
        # settle frees enough units, not when the window passes (20 s).
        lim = SlidingWindowLimiter(100, 20.0, store=store, name="wake", guard=0)
        t0 = time.monotonic()
        async with lim.reserve(100) as r:
            queued = asyncio.create_task(_reserve_and_hold(lim, 50))
            await asyncio.sleep(0.2)
            assert not queued.done()
            await r.settle(40)
            await asyncio.wait_for(queued, 5.0)
        assert time.monotonic() - t0 < 5.0
        assert not (await lim.try_acquire(cost=11)).allowed  # 40 + 50 of 100 remain charged
        assert (await lim.try_acquire(cost=10)).allowed

    async def test_reserve_settle_wakes_a_plain_acquire_too(self, store: Store) -> None:
        # A caller of acquire() (or a decorated call) waits in the same place as a reserve.
        lim = SlidingWindowLimiter(100, 20.0, store=store, name="wake-plain", guard=0)
        t0 = time.monotonic()
        async with lim.reserve(100) as r:
            queued = asyncio.create_task(lim.acquire(cost=50))
            await asyncio.sleep(0.2)
            assert not queued.done()
            await r.settle(40)
            await asyncio.wait_for(queued, 5.0)
        assert time.monotonic() - t0 < 5.0

    async def test_all_of_reserve_takes_a_mapping(self, store: Store) -> None:
        tin = SlidingWindowLimiter(1000, 20.0, store=store, name="tin", guard=0)
        rpm = SlidingWindowLimiter(5, 20.0, store=store, name="rpm", guard=0)
        both = all_of(tin, rpm)
        async with both.reserve({"tin": 800}) as r:
            with pytest.raises(TypeError, match="actual"):
                await r.settle(100)
            await r.settle({"tin": 300})  # rpm left out: keeps its 1
        assert r.cost == {"tin": 300, "rpm": 1}
        assert (await tin.try_acquire(cost=700)).allowed
        assert not (await tin.try_acquire(cost=1)).allowed
        assert (await rpm.try_acquire()).remaining == 3


async def _reserve_and_hold(lim: SlidingWindowLimiter, cost: int) -> None:
    async with lim.reserve(cost) as r:
        await r.settle(cost)
