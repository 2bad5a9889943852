"""Circuit-breaker conformance: :class:`resilience.stores.base.BreakerOps`.

These drive the store protocol directly (``breaker_acquire`` / ``breaker_record`` /
``breaker_admin``) for the research's CB-1..CB-9 cases, and the policy for cancellation. On
the library's cluster store every script runs on a real cluster, so a CROSSSLOT error would
fail them (CB-13). Times are sub-second; the margins absorb a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from resilience import CircuitBreaker, CircuitOpen
from resilience.stores.base import BreakerReply, BreakerSpec, Store

__all__ = ["BreakerConformance", "fail", "spec", "trip"]

S = 1_000_000  # µs per second


def spec(
    threshold: int = 10,
    window: float = 60.0,
    brk: float = 30.0,
    *,
    max_break: float | None = None,
    probes: int = 1,
    successes: int = 1,
    lease: float | None = None,
    name: str = "cb",
) -> BreakerSpec:
    """A breaker spec in seconds (``S`` microseconds each)."""
    return BreakerSpec(
        name=name,
        failure_threshold=threshold,
        window_us=round(window * S),
        break_us=round(brk * S),
        max_break_us=round((max_break or brk) * S),
        half_open_max_calls=probes,
        success_threshold=successes,
        probe_lease_us=round((lease or 30.0) * S),
    )


async def fail(
    store: Store, sp: BreakerSpec, gen: int = 0, key: str = "", hint_us: int = 0
) -> BreakerReply:
    """Record one failure of generation ``gen``."""
    return await store.breaker_record(sp, key, "fail", gen, "", hint_us)


async def trip(store: Store, sp: BreakerSpec, key: str = "") -> BreakerReply:
    """Open the breaker with ``failure_threshold`` failures; the tripping reply."""
    gen = (await store.breaker_acquire(sp, key)).gen
    for _ in range(sp.failure_threshold):
        r = await fail(store, sp, gen, key)
    assert r.state == "open"
    return r


class BreakerConformance:
    """The circuit breaker's part of the store protocol (a ``store`` fixture gives the store)."""

    async def test_cb1_concurrent_failures_trip_exactly_once(self, store: Store) -> None:
        sp = spec(10, 60, 30)
        a = await store.breaker_acquire(sp, "")
        assert a.permit == "allow"
        assert a.state == "closed"
        replies = await asyncio.gather(*[fail(store, sp, a.gen) for _ in range(20)])
        trips = [r for r in replies if r.old]
        assert len(trips) == 1
        assert (trips[0].old, trips[0].state) == ("closed", "open")
        assert trips[0].gen == a.gen + 1
        assert 29.9 * S <= trips[0].wait_us <= 30 * S
        assert sum(r.stale for r in replies) == 10  # the ten after the trip were ignored
        assert sorted(r.failures for r in replies if not r.stale and not r.old) == list(
            range(1, 10)
        )
        d = await store.breaker_acquire(sp, "")
        assert d.permit == "deny"
        assert d.state == "open"
        assert 29.5 * S <= d.wait_us <= 30 * S

    async def test_cb2_failures_leave_the_window(self, store: Store) -> None:
        sp = spec(3, 0.3, 30)
        await fail(store, sp)
        await fail(store, sp)
        await asyncio.sleep(0.4)
        r = await fail(store, sp)
        assert (r.state, r.failures, r.old) == ("closed", 1, "")
        st = await store.breaker_admin(sp, "", "state", 0)
        assert (st.state, st.failures) == ("closed", 1)

    async def test_cb3_half_open_grants_exactly_max_probes(self, store: Store) -> None:
        sp = spec(1, 60, 0.2, probes=2)
        await trip(store, sp)
        await asyncio.sleep(0.25)
        replies = await asyncio.gather(*[store.breaker_acquire(sp, "") for _ in range(100)])
        probes = [r for r in replies if r.permit == "probe"]
        denies = [r for r in replies if r.permit == "deny"]
        assert len(probes) == 2
        assert len(denies) == 98
        assert len({r.token for r in probes}) == 2
        assert len({r.gen for r in replies}) == 1  # everyone saw the same generation
        assert sum(1 for r in replies if r.old == "open") == 1  # one open -> half_open transition
        assert all(r.state == "half_open" for r in replies)

    async def test_cb4_crashed_probers_lease_expires(self, store: Store) -> None:
        sp = spec(1, 60, 0.1, lease=0.5)
        await trip(store, sp)
        await asyncio.sleep(0.15)
        crashed = await store.breaker_acquire(sp, "")
        assert crashed.permit == "probe"
        other = await store.breaker_acquire(sp, "")
        assert other.permit == "deny"
        assert 0.3 * S < other.wait_us <= 0.5 * S  # until the crashed prober's lease expires
        await asyncio.sleep(0.55)
        again = await store.breaker_acquire(sp, "")
        assert again.permit == "probe"
        assert again.token != crashed.token
        late = await store.breaker_record(sp, "", "ok", crashed.gen, crashed.token, 0)
        assert late.stale
        assert late.state == "half_open"
        ok = await store.breaker_record(sp, "", "ok", again.gen, again.token, 0)
        assert (ok.old, ok.state) == ("half_open", "closed")

    async def test_cb5_failed_probe_reopens_with_growing_break(self, store: Store) -> None:
        sp = spec(1, 60, 0.2, max_break=5.0)
        first = await trip(store, sp)
        assert 0.15 * S < first.wait_us <= 0.2 * S
        await asyncio.sleep(0.25)
        p = await store.breaker_acquire(sp, "")
        assert p.permit == "probe"
        r = await store.breaker_record(sp, "", "fail", p.gen, p.token, 0)
        assert (r.old, r.state) == ("half_open", "open")
        assert r.wait_us == 400_000  # doubled: second consecutive trip
        await asyncio.sleep(0.45)
        p = await store.breaker_acquire(sp, "")
        assert p.permit == "probe"
        r = await store.breaker_record(sp, "", "ok", p.gen, p.token, 0)
        assert (r.old, r.state) == ("half_open", "closed")
        assert (await store.breaker_acquire(sp, "")).permit == "allow"
        # Growth restarts after a close: the next trip gets the base break again.
        again = await trip(store, sp)
        assert 0.15 * S < again.wait_us <= 0.2 * S

    async def test_success_threshold_probes_close(self, store: Store) -> None:
        sp = spec(1, 60, 0.1, probes=1, successes=3)
        await trip(store, sp)
        await asyncio.sleep(0.15)
        for i in range(3):
            p = await store.breaker_acquire(sp, "")
            assert p.permit == "probe", i
            assert (await store.breaker_acquire(sp, "")).permit == "deny"
            r = await store.breaker_record(sp, "", "ok", p.gen, p.token, 0)
            assert r.state == ("closed" if i == 2 else "half_open")
        assert (await store.breaker_acquire(sp, "")).permit == "allow"

    async def test_cb6_outcome_from_an_older_generation_is_stale(self, store: Store) -> None:
        sp = spec(2, 60, 0.1)
        before = await store.breaker_acquire(sp, "")  # a long call starts in generation g
        await trip(store, sp)
        await asyncio.sleep(0.15)
        p = await store.breaker_acquire(sp, "")
        await store.breaker_record(sp, "", "ok", p.gen, p.token, 0)  # re-closed
        late = await fail(store, sp, before.gen)
        assert late.stale
        assert late.state == "closed"
        st = await store.breaker_admin(sp, "", "state", 0)
        assert st.failures == 0
        # ... and an outcome from the current generation counts.
        now = await fail(store, sp, st.gen)
        assert not now.stale
        assert now.failures == 1

    async def test_cb8_ignored_probe_returns_its_permit(self, store: Store) -> None:
        sp = spec(1, 60, 0.1)
        await trip(store, sp)
        await asyncio.sleep(0.15)
        p = await store.breaker_acquire(sp, "")
        assert (await store.breaker_acquire(sp, "")).permit == "deny"
        r = await store.breaker_record(sp, "", "ignore", p.gen, p.token, 0)
        assert not r.stale
        assert r.state == "half_open"
        assert (await store.breaker_acquire(sp, "")).permit == "probe"

    async def test_cb9_retry_after_hint_keeps_it_open(self, store: Store) -> None:
        sp = spec(2, 60, 30)
        gen = (await store.breaker_acquire(sp, "")).gen
        await fail(store, sp, gen)
        r = await fail(store, sp, gen, hint_us=120 * S)
        assert r.old == "closed"
        assert 119 * S <= r.wait_us <= 120 * S
        # A hint arriving while open extends the break; a shorter one does not shorten it.
        r = await fail(store, sp, gen, hint_us=200 * S)
        assert r.stale
        assert 199 * S <= r.wait_us <= 200 * S
        r = await fail(store, sp, gen, hint_us=1 * S)
        assert 199 * S <= r.wait_us <= 200 * S

    async def test_admin_open_close_reset_and_state(self, store: Store) -> None:
        sp = spec(3, 60, 30, max_break=100)
        assert (await store.breaker_admin(sp, "k", "state", 0)).state == "closed"
        r = await store.breaker_admin(sp, "k", "open", 5 * S)
        assert (r.old, r.state, r.wait_us) == ("closed", "open", 5 * S)
        r = await store.breaker_admin(sp, "k", "open", 7 * S)
        assert (r.old, r.state) == ("", "open")  # no transition, new deadline
        st = await store.breaker_admin(sp, "k", "state", 0)
        assert st.state == "open"
        assert 6.5 * S < st.wait_us <= 7 * S
        r = await store.breaker_admin(sp, "k", "close", 0)
        assert (r.old, r.state) == ("open", "closed")
        r = await store.breaker_admin(sp, "k", "reset", 0)
        assert (r.old, r.state) == ("", "closed")
        # Another key is independent.
        assert (await store.breaker_acquire(sp, "other")).permit == "allow"
        short = spec(1, 60, 0.05)
        await store.breaker_admin(short, "k", "open", 50_000)
        await asyncio.sleep(0.08)
        assert (await store.breaker_admin(short, "k", "state", 0)).state == "half_open"

    async def test_hostile_names_and_keys_are_isolated(self, store: Store) -> None:
        a = spec(1, 60, 30, name="a:{b}")
        b = spec(1, 60, 30, name="a")
        await trip(store, a, key="}{ ü:x")
        assert (await store.breaker_acquire(a, "}{ ü:x")).permit == "deny"
        assert (await store.breaker_acquire(b, "{b}:}{ ü:x")).permit == "allow"
        assert (await store.breaker_acquire(a, "")).permit == "allow"

    async def test_policy_trip_and_fail_fast(self, store: Store) -> None:
        cb = CircuitBreaker(3, 60, 30, store=store, name="p")

        async def boom() -> None:
            raise ConnectionError("down")

        for _ in range(3):
            with pytest.raises(ConnectionError):
                await cb.call(boom)
        with pytest.raises(CircuitOpen) as info:
            await cb.call(boom)
        assert info.value.name == "p"
        assert 29 < info.value.retry_after <= 30
        assert await cb.state() == "open"

    async def test_cb8_cancellation_is_never_a_failure_and_returns_the_probe(
        self, store: Store
    ) -> None:
        cb = CircuitBreaker(2, 60, 0.1, store=store, name="c", probe_lease=30)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(10)

        tasks = [asyncio.create_task(cb.call(hang)) for _ in range(20)]
        await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert await cb.state() == "closed"
        assert await cb.failures() == 0

        await cb.open(duration=0.1)
        await asyncio.sleep(0.15)
        started.clear()
        probe = asyncio.create_task(cb.call(hang))
        await started.wait()
        with pytest.raises(CircuitOpen):  # the permit is held (lease 30 s)
            await cb.call(hang)
        probe.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await probe

        async def ok() -> str:
            return "ok"

        # The permit came back at once (not after the 30 s lease): the next call probes, closes.
        assert await cb.call(ok) == "ok"
        assert time.monotonic() - t0 < 5
        assert await cb.state() == "closed"

    async def test_restore_rewrites_a_lost_open_state_with_its_generation(
        self, store: Store
    ) -> None:
        """``restore``: a process re-seeds the open state (generation, time left) it knows."""
        sp = spec(2, 60, 30)
        r = await store.breaker_record(sp, "", "restore", 7, "", 20 * S)
        assert (r.state, r.gen, r.old, r.stale) == ("open", 7, "", False)
        assert 19.9 * S < r.wait_us <= 20 * S
        d = await store.breaker_acquire(sp, "")
        assert (d.permit, d.gen) == ("deny", 7)
        assert 19 * S < d.wait_us <= 20 * S
        # Idempotent: the same (or an older) generation changes nothing.
        again = await store.breaker_record(sp, "", "restore", 7, "", 50 * S)
        assert again.stale
        assert again.wait_us <= 20 * S
        # Generations go on from there.
        assert (await store.breaker_admin(sp, "", "close", 0)).gen == 8

    async def test_restore_never_shortens_a_break_nor_overrides_a_written_close(
        self, store: Store
    ) -> None:
        sp = spec(1, 60, 30)
        await trip(store, sp, key="long")  # generation 1, open for 30 s
        r = await store.breaker_record(sp, "long", "restore", 5, "", 10 * S)
        assert (r.state, r.gen, r.stale) == ("open", 5, False)
        assert 29 * S < r.wait_us <= 30 * S  # the longer break is kept
        await store.breaker_admin(sp, "closed", "close", 0)  # generation 1, a written close
        c = await store.breaker_record(sp, "closed", "restore", 5, "", 10 * S)
        assert (c.state, c.gen, c.stale) == ("closed", 1, True)
        assert (await store.breaker_acquire(sp, "closed")).permit == "allow"

    async def test_one_upstream_event_counts_once(self, store: Store) -> None:
        # A burst of failures that each ask for a wait (the requests in flight when a quota ran
        # out, all answered 429 + Retry-After) counts as one failure, on every store; failures
        # without a hint still count one by one, and after the quiet period the next hint counts.
        sp = spec(3, 60, 30)
        a = await store.breaker_acquire(sp, "")
        burst = await asyncio.gather(*[fail(store, sp, a.gen, hint_us=S // 2) for _ in range(20)])
        assert sum(not r.stale for r in burst) == 1
        assert all(r.state == "closed" for r in burst)
        assert (await store.breaker_admin(sp, "", "state", 0)).failures == 1
        r = await fail(store, sp, a.gen)  # no hint: counts
        assert not r.stale
        assert r.failures == 2
        await asyncio.sleep(0.6)
        r = await fail(store, sp, a.gen, hint_us=S)
        assert r.state == "open"  # the third counted failure trips it
        assert r.old == "closed"

    async def test_reset_forgets_the_quiet_period(self, store: Store) -> None:
        sp = spec(2, 60, 30)
        a = await store.breaker_acquire(sp, "")
        assert not (await fail(store, sp, a.gen, hint_us=60 * S)).stale
        reset = await store.breaker_admin(sp, "", "reset", 0)
        assert not (await fail(store, sp, reset.gen, hint_us=60 * S)).stale
