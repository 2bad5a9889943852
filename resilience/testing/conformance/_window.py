"""Sliding-window conformance: :class:`resilience.stores.base.WindowOps`, directly and through
:class:`resilience.SlidingWindowLimiter`. Windows are short and bounds generous: each test says
what it proves."""

from __future__ import annotations

import asyncio
import time

import pytest

from resilience import MemoryStore, RateLimited, SlidingWindowLimiter, all_of
from resilience.stores.base import MERGE_FROM, Store, WindowLimit, takes_merge

__all__ = ["WindowConformance"]


class WindowConformance:
    """The rate limiter's part of the store protocol (a ``store`` fixture gives the store)."""

    async def test_exactly_limit_admitted_under_concurrency(self, store: Store) -> None:
        lim = SlidingWindowLimiter(10, 5.0, store=store, guard=0)
        results = await asyncio.gather(*[lim.try_acquire() for _ in range(200)])
        assert sum(d.allowed for d in results) == 10
        waits = [d.retry_after for d in results if not d.allowed]
        assert all(4.0 < w <= 5.0 for w in waits)

    async def test_cost_is_one_weighted_entry(self, store: Store) -> None:
        # RL/D12: three calls of cost 4 against a limit of 10: two admitted, the third refused.
        lim = SlidingWindowLimiter(10, 5.0, store=store, name="cost", guard=0)
        got = [await lim.try_acquire(cost=4) for _ in range(3)]
        assert [d.allowed for d in got] == [True, True, False]
        assert [d.remaining for d in got[:2]] == [6, 2]
        assert (await lim.try_acquire(cost=2)).allowed  # exactly 10 units fit

    async def test_rejected_attempts_write_nothing(self, store: Store) -> None:
        # RL-2: refused attempts do not occupy slots, so they never make another request fail.
        lim = SlidingWindowLimiter(10, 5.0, store=store, name="rej", guard=0)
        assert (await lim.try_acquire(cost=9)).allowed
        refused = await asyncio.gather(*[lim.try_acquire(cost=2) for _ in range(20)])
        assert not any(d.allowed for d in refused)
        assert (await lim.try_acquire(cost=1)).allowed

    async def test_all_of_charges_every_quota_or_none(self, store: Store) -> None:
        rpm = SlidingWindowLimiter(3, 5.0, store=store, name="rpm", guard=0)
        tpm = SlidingWindowLimiter(100, 5.0, store=store, name="tpm", guard=0)
        both = all_of(rpm, tpm)
        assert (await both.try_acquire(cost={"tpm": 60})).allowed
        # tpm has no room for 60 more: refused, and rpm is not charged either.
        assert not (await both.try_acquire(cost={"tpm": 60})).allowed
        assert (await rpm.try_acquire()).remaining == 1  # 1 (all_of) + 1 (this) of 3 used
        assert (await both.try_acquire(cost={"tpm": 40})).allowed  # rpm 3/3, tpm 100/100
        # rpm is now full: a cheap request is refused and tpm stays as it was.
        assert not (await both.try_acquire(cost={"tpm": 1})).allowed
        assert not (await tpm.try_acquire(cost=1)).allowed

    async def test_acquire_fails_at_once_when_the_wait_exceeds_timeout(self, store: Store) -> None:
        # RL-8: the known wait (~5 s) exceeds the timeout: RateLimited immediately, not after 0.5 s.
        lim = SlidingWindowLimiter(1, 5.0, store=store, name="to", guard=0)
        await lim.acquire()
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await lim.acquire(timeout=0.5)
        assert time.monotonic() - t0 < 0.25
        assert 4.0 < info.value.retry_after <= 5.0

    async def test_acquire_waits_for_the_slot(self, store: Store) -> None:
        # A sub-second window works (RL-5): the third call waits for the first slot, ~0.3 s.
        lim = SlidingWindowLimiter(2, 0.3, store=store, name="wait", guard=0)
        t0 = time.monotonic()
        await lim.acquire()
        await lim.acquire()
        await lim.acquire()
        waited = time.monotonic() - t0
        # Lower bound exact (the window); upper bound loose (a busy 2-core machine, a cluster).
        assert 0.27 <= waited < 1.0

    async def test_penalize_blocks_the_key_and_only_extends(self, store: Store) -> None:
        lim = SlidingWindowLimiter(100, 5.0, store=store, name="pen", guard=0)
        await lim.penalize(0.4)
        await lim.penalize(0.1)  # shorter: ignored
        d = await lim.try_acquire()
        assert not d.allowed
        assert 0.2 < d.retry_after <= 0.4
        assert (await lim.try_acquire(key="other")).allowed  # only this key is blocked
        t0 = time.monotonic()
        await lim.acquire(timeout=1.0)
        assert time.monotonic() - t0 < 0.6

    async def test_paused_reads_the_penalty_left_and_writes_nothing(self, store: Store) -> None:
        lim = (WindowLimit("paused", 5, 1_000_000),)
        assert await store.window_paused(lim, "k") == 0
        assert (await store.window_acquire(lim, "k", (1,), -1)).allowed  # a log, no penalty
        assert await store.window_paused(lim, "k") == 0
        await store.window_penalize(lim, "k", 400_000)
        assert 200_000 < await store.window_paused(lim, "k") <= 400_000
        assert await store.window_paused(lim, "other") == 0  # only this key
        assert (await store.window_acquire(lim, "other", (1,), -1)).allowed  # nothing written

    async def test_a_waiter_rechecks_a_pause_that_landed_while_it_slept(self, store: Store) -> None:
        # Limit 1 per 0.3 s, full: the waiter reserves t0+0.3. At t0+0.1 the key is paused
        # until ~t0+0.7 (another process drew a 429 with a wait hint). The waiter wakes at
        # t0+0.3, sees the pause, and goes at its end, not into it.
        lim = SlidingWindowLimiter(1, 0.3, store=store, name="recheck", guard=0)
        t0 = time.monotonic()
        await lim.acquire()
        waiter = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0.1)
        await lim.penalize(0.6)
        await waiter
        assert time.monotonic() - t0 >= 0.65
        # It holds one slot (after the pause), not two: the next one waits a whole window.
        d = await lim.try_acquire()
        assert not d.allowed
        assert d.retry_after > 0.15

    async def test_a_recheck_that_outlasts_the_timeout_is_rate_limited(self, store: Store) -> None:
        # As above, with timeout=0.5: after the pause the slot lies past the bound.
        lim = SlidingWindowLimiter(1, 0.3, store=store, name="recheck-t", guard=0)
        await lim.acquire()
        waiter = asyncio.create_task(lim.acquire(timeout=0.5))
        await asyncio.sleep(0.1)
        await lim.penalize(0.8)
        with pytest.raises(RateLimited) as info:
            await waiter
        assert info.value.retry_after > 0.3
        # The released reservation left nothing behind: after the pause, one fits at once.
        await asyncio.sleep(0.7)
        assert (await lim.try_acquire()).allowed

    async def test_a_learned_limit_caps_the_key_until_it_expires(self, store: Store) -> None:
        lim = (WindowLimit("learn", 10, 5_000_000),)
        await store.window_learn(lim, "k", 3, 400_000)
        got = [(await store.window_acquire(lim, "k", (1,), -1)).allowed for _ in range(5)]
        assert got == [True, True, True, False, False]
        assert (await store.window_acquire(lim, "other", (1,), -1)).allowed  # only this key
        refused = await store.window_acquire(lim, "k", (1,), -1)
        assert refused.remaining == 0
        assert 4_000_000 < refused.wait_us <= 5_000_000  # the oldest entry must leave
        await asyncio.sleep(0.5)  # expired: the configured limit again
        assert all([(await store.window_acquire(lim, "k", (1,), -1)).allowed for _ in range(7)])
        assert not (await store.window_acquire(lim, "k", (1,), -1)).allowed

    async def test_a_learned_limit_is_replaced_lifted_and_cleared(self, store: Store) -> None:
        lim = (WindowLimit("relearn", 10, 5_000_000),)
        await store.window_learn(lim, "k", 2, 60_000_000)
        assert [(await store.window_acquire(lim, "k", (1,), -1)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        await store.window_learn(lim, "k", 4, 60_000_000)  # the provider reports more
        assert (await store.window_acquire(lim, "k", (2,), -1)).allowed
        assert not (await store.window_acquire(lim, "k", (1,), -1)).allowed
        await store.window_learn(lim, "k", 4, 0)  # cleared: the configured 10
        assert (await store.window_acquire(lim, "k", (6,), -1)).allowed

    async def test_a_learned_limit_never_refuses_a_cost_for_ever(self, store: Store) -> None:
        # A cap below a request's cost: the request fits an empty log (as if the cap were its
        # cost); a full log makes it wait, never refuses it outright.
        lim = (WindowLimit("learn-cost", 10, 5_000_000),)
        await store.window_learn(lim, "k", 1, 60_000_000)
        assert (await store.window_acquire(lim, "k", (4,), -1)).allowed
        r = await store.window_acquire(lim, "k", (4,), 10_000_000)
        assert r.allowed
        assert 4_000_000 < r.wait_us <= 5_000_000

    async def test_cancelled_waiter_releases_its_reserved_slot(self, store: Store) -> None:
        # RL-13: limit 1 per 5 s, full. A waiter reserves t0+5 and is cancelled. If it leaked its
        # reservation, the next request's earliest slot would be t0+10; released, it is t0+5.
        lim = SlidingWindowLimiter(1, 5.0, store=store, name="cx", guard=0)
        await lim.acquire()
        waiter = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0.15)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        d = await lim.try_acquire()
        assert not d.allowed
        assert 4.0 < d.retry_after <= 5.0

    async def test_guard_extends_every_slot(self, store: Store) -> None:
        # window 0.2 s + guard 0.2 s: the second call of limit 1 waits ~0.4 s, not 0.2 s.
        lim = SlidingWindowLimiter(1, 0.2, store=store, name="guard", guard=0.2)
        await lim.acquire()
        d = await lim.try_acquire()
        assert not d.allowed
        assert 0.3 < d.retry_after <= 0.4

    async def test_keys_are_independent_and_arbitrary(self, store: Store) -> None:
        lim = SlidingWindowLimiter(1, 5.0, store=store, name="n{a}:b", guard=0)
        odd = ["", "tenant:1", "{tag}", "x" * 500, "ü 🙂", "a%3A"]
        assert all([(await lim.try_acquire(key=k)).allowed for k in odd])
        assert not any([(await lim.try_acquire(key=k)).allowed for k in odd])

    async def test_a_refusal_carries_no_token(self, store: Store) -> None:
        # The contract (WindowResult.token): "" when refused, whatever the kind of refusal; a
        # token only for an admission, immediate or reserved. Redis used to return its nonce.
        one = WindowLimit("tok", 1, 5_000_000)
        first = await store.window_acquire((one,), "", (1,), -1)
        assert first.allowed
        assert first.token
        for max_wait in (-1, 0, 1_000_000):  # try; "only if free now"; a wait shorter than needed
            r = await store.window_acquire((one,), "", (1,), max_wait)
            assert (r.allowed, r.token) == (False, ""), max_wait
            assert r.wait_us > 0
        both = (one, WindowLimit("tok2", 10, 5_000_000))
        r = await store.window_acquire(both, "", (1, 1), -1)
        assert (r.allowed, r.token) == (False, "")
        reserved = await store.window_acquire((one,), "", (1,), 10_000_000)
        assert reserved.allowed
        assert reserved.token
        assert reserved.wait_us > 0

    async def test_bad_keys_fail_alike_on_every_store(self, store: Store) -> None:
        # Issue 12: a lone surrogate, a non-str key: the same error as on the memory store, at
        # the call, and the store is not touched (the next call works).
        for bad in ("t\udcff", 123, 0, b"k"):
            errors = []
            for s in (MemoryStore(), store):
                lim = SlidingWindowLimiter(2, 5.0, store=s, name="bad", guard=0)
                with pytest.raises((TypeError, ValueError)) as info:
                    await lim.try_acquire(bad)  # type: ignore[arg-type]
                errors.append((type(info.value), str(info.value)))
            assert errors[0] == errors[1]
            assert errors[0][1].startswith("key")
        lim = SlidingWindowLimiter(2, 5.0, store=store, name="bad", guard=0)
        assert (await lim.try_acquire("t")).remaining == 1

    async def test_merged_admissions_stay_exact_and_cannot_be_taken_apart(
        self, store: Store
    ) -> None:
        # A store that takes `merge` (stores/base.py, "Merging"): above MERGE_ABOVE, once the
        # log holds MERGE_FROM live entries, admissions for now share their slot's entry and
        # still add up exactly to the limit; releasing a merged admission's token changes
        # nothing; a reservation keeps its own entry and its release frees it. A store
        # without `merge` is not asked to merge.
        if not takes_merge(store):
            pytest.skip("this store keeps an entry per admission (no merge keyword)")
        lim = (WindowLimit("mrg", 20_000, 60_000_000),)
        acquire = store.window_acquire
        for _ in range(MERGE_FROM):  # an entry each, up to MERGE_FROM
            assert (await acquire(lim, "", (1,), -1, merge=True)).allowed  # type: ignore[call-arg]
        got = [await acquire(lim, "", (1_000,), -1, merge=True) for _ in range(15)]  # type: ignore[call-arg]
        assert all(r.allowed and r.wait_us == 0 for r in got)
        assert [r.remaining for r in got[-2:]] == [1_000, 0]
        assert not (await acquire(lim, "", (1,), -1, merge=True)).allowed  # type: ignore[call-arg]
        await store.window_release(lim, "", (1_000,), got[0].token)  # shared: nothing to free
        assert not (await acquire(lim, "", (1,), -1, merge=True)).allowed  # type: ignore[call-arg]
        # A whole window's worth reserved when the admissions above have left (~60 s ahead).
        ahead = await acquire(lim, "", (20_000,), 200_000_000, merge=True)  # type: ignore[call-arg]
        assert ahead.allowed
        assert 59_000_000 < ahead.wait_us < 62_000_000
        await store.window_release(lim, "", (20_000,), ahead.token)  # its own entry: freed
        again = await acquire(lim, "", (20_000,), 200_000_000, merge=True)  # type: ignore[call-arg]
        assert again.allowed  # the same slot again, not one a window after the released one
        assert again.wait_us <= ahead.wait_us
