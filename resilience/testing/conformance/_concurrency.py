"""Concurrency-limit conformance: :class:`resilience.stores.base.ConcurrencyOps`, directly and
through :class:`resilience.ConcurrencyLimit`. Leases are short and bounds generous: each test
says what it proves."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import pytest

from resilience import ConcurrencyLimit, ConcurrencyLimited, StoreUnavailable
from resilience.stores.base import ConcurrencySpec, Store

__all__ = ["ConcurrencyConformance"]

S = 1_000_000  # one second in microseconds
_TOKEN = re.compile(r"[0-9a-z]{1,64}")


def cspec(max_in_flight: int, lease_s: float = 30.0, name: str = "cc") -> ConcurrencySpec:
    """A concurrency limit's spec with a lease in seconds."""
    return ConcurrencySpec(name, max_in_flight, int(lease_s * S))


async def _subscribed(store: Store, messages: list[str], got: asyncio.Event) -> Callable[[], None]:
    """Subscribe; for a store that pushes over the network, wait until it is established."""

    def on_message(message: str) -> None:
        messages.append(message)
        got.set()

    unsubscribe = store.concurrency_subscribe(on_message)
    if not store.decides_locally:
        try:
            await asyncio.wait_for(got.wait(), 5.0)
        except asyncio.TimeoutError:
            unsubscribe()
            pytest.fail("the concurrency subscription was not established within 5 s")
        got.clear()
    return unsubscribe


class ConcurrencyConformance:
    """The concurrency limit's part of the store protocol (a ``store`` fixture gives the
    store; an ``unavailable_store`` one, as for :class:`ContractConformance`, enables the
    error-contract test)."""

    @pytest.fixture
    def unavailable_store(self) -> Store | None:
        """A store whose backend is down (``None``: the store kind is never unavailable)."""
        return None

    async def test_exactly_max_in_flight_granted_under_concurrency(self, store: Store) -> None:
        sp = cspec(5)
        replies = await asyncio.gather(
            *[store.concurrency_acquire(sp, "k", "", False) for _ in range(60)]
        )
        granted = [r for r in replies if r.granted]
        assert len(granted) == 5
        assert len({r.token for r in granted}) == 5
        assert all(_TOKEN.fullmatch(r.token) for r in granted)
        refused = [r for r in replies if not r.granted]
        assert all(r.token == "" and r.waiting == 0 for r in refused)  # a refusal writes nothing
        assert all(0 < r.wait_us <= 10 * S for r in refused)
        # Another key has its own permits.
        assert (await store.concurrency_acquire(sp, "other", "", False)).granted

    async def test_a_release_frees_a_permit_and_is_idempotent(self, store: Store) -> None:
        sp = cspec(1)
        a = await store.concurrency_acquire(sp, "k", "", False)
        assert a.granted
        assert a.in_flight == 1
        assert not (await store.concurrency_acquire(sp, "k", "", False)).granted
        await store.concurrency_release(sp, "k", a.token)
        await store.concurrency_release(sp, "k", a.token)
        await store.concurrency_release(sp, "k", "unknown1")
        b = await store.concurrency_acquire(sp, "k", "", False)
        assert b.granted
        assert b.in_flight == 1
        # A repeated acquire of a held permit is granted again, not counted twice.
        again = await store.concurrency_acquire(sp, "k", b.token, True)
        assert again.granted
        assert again.token == b.token
        assert again.in_flight == 1

    async def test_waiters_are_served_first_come_first_served(self, store: Store) -> None:
        sp = cspec(2)
        h1 = await store.concurrency_acquire(sp, "k", "", True)
        h2 = await store.concurrency_acquire(sp, "k", "", True)
        assert h1.granted
        assert h2.granted
        w = [await store.concurrency_acquire(sp, "k", "", True) for _ in range(3)]
        assert [r.granted for r in w] == [False] * 3
        assert [r.waiting for r in w] == [1, 2, 3]
        assert len({r.token for r in w}) == 3
        assert all(_TOKEN.fullmatch(r.token) for r in w)
        assert all(0 < r.wait_us <= 10 * S for r in w)
        await store.concurrency_release(sp, "k", h1.token)
        # One permit free: only the head may take it; the later waiters, and a newcomer
        # (who would queue behind them), may not.
        assert not (await store.concurrency_acquire(sp, "k", w[2].token, True)).granted
        assert not (await store.concurrency_acquire(sp, "k", w[1].token, True)).granted
        assert not (await store.concurrency_acquire(sp, "k", "", False)).granted
        first = await store.concurrency_acquire(sp, "k", w[0].token, True)
        assert first.granted
        assert first.token == w[0].token
        assert first.waiting == 2
        # A waiter that gives up leaves the queue: the one behind it moves up.
        await store.concurrency_release(sp, "k", w[1].token)
        await store.concurrency_release(sp, "k", h2.token)
        third = await store.concurrency_acquire(sp, "k", w[2].token, True)
        assert third.granted
        assert third.waiting == 0

    async def test_try_without_queue_leaves_the_queue(self, store: Store) -> None:
        sp = cspec(1)
        h = await store.concurrency_acquire(sp, "k", "", True)
        w1 = await store.concurrency_acquire(sp, "k", "", True)
        w2 = await store.concurrency_acquire(sp, "k", "", True)
        gone = await store.concurrency_acquire(sp, "k", w1.token, False)
        assert not gone.granted
        assert gone.token == ""
        assert gone.waiting == 1
        await store.concurrency_release(sp, "k", h.token)
        assert (await store.concurrency_acquire(sp, "k", w2.token, True)).granted

    async def test_an_expired_lease_frees_the_permit(self, store: Store) -> None:
        sp = cspec(1, lease_s=0.4)
        held = await store.concurrency_acquire(sp, "k", "", False)
        assert held.granted
        refused = await store.concurrency_acquire(sp, "k", "", False)
        assert not refused.granted
        assert refused.wait_us <= 0.4 * S // 3 + 1
        await asyncio.sleep(0.6)
        assert (await store.concurrency_acquire(sp, "k", "", False)).granted
        # A renewal of the lapsed permit holds it again (its call still runs), over the limit.
        assert not await store.concurrency_renew(sp, "k", held.token)
        again = await store.concurrency_acquire(sp, "k", held.token, True)
        assert again.granted
        assert again.in_flight == 2

    async def test_renewal_keeps_a_permit_past_its_lease(self, store: Store) -> None:
        sp = cspec(1, lease_s=0.4)
        held = await store.concurrency_acquire(sp, "k", "", False)
        for _ in range(4):
            await asyncio.sleep(0.15)
            assert await store.concurrency_renew(sp, "k", held.token)
        assert not (await store.concurrency_acquire(sp, "k", "", False)).granted

    async def test_a_crashed_waiter_at_the_head_is_skipped_within_its_lease(
        self, store: Store
    ) -> None:
        sp = cspec(1, lease_s=0.5)
        h = await store.concurrency_acquire(sp, "k", "", True)
        crashed = await store.concurrency_acquire(sp, "k", "", True)  # never asks again
        w = await store.concurrency_acquire(sp, "k", "", True)
        assert not crashed.granted
        assert not w.granted
        await store.concurrency_release(sp, "k", h.token)
        t0 = time.monotonic()
        r = await store.concurrency_acquire(sp, "k", w.token, True)
        assert not r.granted  # the head's place still holds
        while not r.granted:
            assert time.monotonic() - t0 < 3.0, "a crashed waiter blocked the queue"
            await asyncio.sleep(max(r.wait_us / S, 0.01))
            r = await store.concurrency_acquire(sp, "k", w.token, True)
        assert r.token == w.token

    async def test_a_release_tells_the_waiter_whose_turn_it_is(self, store: Store) -> None:
        messages: list[str] = []
        got = asyncio.Event()
        unsubscribe = await _subscribed(store, messages, got)
        try:
            sp = cspec(1, name="told")
            h = await store.concurrency_acquire(sp, "a b", "", True)
            w = await store.concurrency_acquire(sp, "a b", "", True)
            messages.clear()
            await store.concurrency_release(sp, "a b", h.token)
            tag = store.concurrency_tag("told", "a b")
            assert " " not in tag
            assert tag != store.concurrency_tag("told", "a")
            expected = f"{tag} {w.token}"
            deadline = time.monotonic() + 5.0
            while expected not in messages:  # (a "" may come first: a re-subscription)
                got.clear()
                await asyncio.wait_for(got.wait(), max(deadline - time.monotonic(), 0.0))
        finally:
            unsubscribe()

    # ------------------------------------------------------------------ through the policy

    async def test_the_policy_never_exceeds_max_in_flight(self, store: Store) -> None:
        limit = ConcurrencyLimit(3, store=store, name="pol", lease=5.0)
        running = peak = 0

        @limit
        async def work() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1

        await asyncio.wait_for(asyncio.gather(*[work() for _ in range(30)]), 20.0)
        assert peak == 3
        # Nothing leaked: all three permits are free at once.
        async with limit.acquire(timeout=0), limit.acquire(timeout=0), limit.acquire(timeout=0):
            with pytest.raises(ConcurrencyLimited):
                async with limit.acquire(timeout=0):
                    pass

    async def test_a_cancelled_waiter_gives_its_place_back(self, store: Store) -> None:
        limit = ConcurrencyLimit(1, store=store, name="cancel", lease=30.0)
        async with limit.acquire():
            waiter = asyncio.ensure_future(limit.acquire().__aenter__())
            await asyncio.sleep(0.2)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        # Neither the permit nor the cancelled waiter's place blocks a newcomer.
        t0 = time.monotonic()
        async with limit.acquire(timeout=2.0):
            assert time.monotonic() - t0 < 1.0

    async def test_operations_of_an_unavailable_store_raise_store_unavailable(
        self, unavailable_store: Store | None
    ) -> None:
        if unavailable_store is None:
            pytest.skip("this kind of store is never unavailable")
        s = unavailable_store
        sp = cspec(1, name="down")
        ops: list[Callable[[], Awaitable[object]]] = [
            lambda: s.concurrency_acquire(sp, "k", "", True),
            lambda: s.concurrency_renew(sp, "k", "t1"),
            lambda: s.concurrency_release(sp, "k", "t1"),
        ]
        for op in ops:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await op()
            assert time.monotonic() - t0 < 5.0
