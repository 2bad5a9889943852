"""ConcurrencyLimit on the memory store and through FallbackStore: options, the store's
semantics against a model (hypothesis), cancellation at every await, fallback modes,
telemetry."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import (
    ConcurrencyLimit,
    ConcurrencyLimited,
    MemoryStore,
    Pipeline,
    RateLimited,
    RedisStore,
    StoreUnavailable,
)
from resilience.stores import FallbackStore
from resilience.stores.base import ConcurrencyReply, ConcurrencySpec
from resilience.testing import FakeClock

# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("kwargs", "exc", "param"),
    [
        ({"max_in_flight": 0}, ValueError, "max_in_flight"),
        ({"max_in_flight": 1.5}, TypeError, "max_in_flight"),
        ({"max_in_flight": 2, "lease": 0.001}, ValueError, "lease"),
        ({"max_in_flight": 2, "timeout": -1}, ValueError, "timeout"),
        ({"max_in_flight": 2, "name": ""}, ValueError, "name"),
        ({"max_in_flight": 2, "key": 3}, TypeError, "key"),
        ({"max_in_flight": 2, "fallback": "maybe"}, ValueError, "fallback"),
        ({"max_in_flight": 2, "store": object()}, TypeError, "store"),
    ],
)
def test_options_are_checked_at_construction(
    kwargs: dict[str, object], exc: type[Exception], param: str
) -> None:
    with pytest.raises(exc, match=param):
        ConcurrencyLimit(**kwargs)  # type: ignore[arg-type]


def test_concurrency_limited_is_a_rate_limited_that_says_concurrency() -> None:
    err = ConcurrencyLimited("gpt", 4, 1.25)
    assert isinstance(err, RateLimited)
    assert "concurrency" in str(err)
    assert (err.name, err.max_in_flight, err.waited, err.retry_after) == ("gpt", 4, 1.25, 0.0)


# ------------------------------------------------------------------ the store against a model


@dataclass
class Model:
    """The memory store's semantics, written plainly (holders, FIFO queue, leases)."""

    max: int
    lease: int
    now: int = 0
    holders: dict[str, int] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)

    def purge(self) -> None:
        self.holders = {t: e for t, e in self.holders.items() if e > self.now}
        self.queue = {t: e for t, e in self.queue.items() if e > self.now}

    def acquire(self, ticket: str, queue: bool) -> tuple[bool, bool]:
        """(granted, queued)."""
        self.purge()
        if ticket in self.holders:
            self.holders[ticket] = self.now + self.lease
            return True, False
        order = list(self.queue)
        rank = order.index(ticket) if ticket in self.queue else len(order)
        if rank < self.max - len(self.holders):
            self.queue.pop(ticket, None)
            self.holders[ticket] = self.now + self.lease
            return True, False
        if not queue:
            self.queue.pop(ticket, None)
            return False, False
        self.queue[ticket] = self.now + self.lease
        return False, True

    def release(self, token: str) -> None:
        self.holders.pop(token, None)
        self.queue.pop(token, None)
        self.purge()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.booleans()),
        st.tuples(st.just("again"), st.integers(0, 20)),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("renew"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(1, 700)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_in_flight=st.integers(1, 4), ops=OPS)
def test_memory_store_matches_the_model(max_in_flight: int, ops: list[tuple[str, object]]) -> None:
    lease_us = 1_000_000
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    sp = ConcurrencySpec("m", max_in_flight, lease_us)
    model = Model(max_in_flight, lease_us)
    tokens: list[str] = []

    async def run() -> None:
        for op, arg in ops:
            model.now = round(clock() * 1e6)
            if op == "new":
                r = await store.concurrency_acquire(sp, "k", "", bool(arg))
                if r.token:
                    tokens.append(r.token)
                    assert model.acquire(r.token, bool(arg)) == (r.granted, not r.granted)
                else:
                    # Refused: the model refuses a newcomer too (it writes nothing).
                    model.purge()
                    assert len(model.queue) >= max_in_flight - len(model.holders)
            elif op == "advance":
                clock.advance(int(arg) / 1000 * lease_us / 1e6 / 1)  # type: ignore[call-overload]
            elif tokens:
                t = tokens[int(arg) % len(tokens)]  # type: ignore[call-overload]
                if op == "again":
                    r = await store.concurrency_acquire(sp, "k", t, True)
                    assert (r.granted, not r.granted) == model.acquire(t, True)
                    assert r.token == t
                elif op == "release":
                    await store.concurrency_release(sp, "k", t)
                    model.release(t)
                else:
                    held = await store.concurrency_renew(sp, "k", t)
                    model.purge()
                    assert held == (t in model.holders)
                    model.holders[t] = model.now + lease_us
            model.purge()
            s = store._slots.get(("m", "k"))
            live_h = {t for t, e in (s.holders.items() if s else ()) if e > model.now}
            live_q = [t for t, e in (s.queue.items() if s else ()) if e > model.now]
            assert live_h == set(model.holders)
            assert live_q == list(model.queue)

    asyncio.run(run())


# ------------------------------------------------------------------ cancellation at every await


def _free(store: MemoryStore) -> bool:
    return not store._slots


class SlowStore(MemoryStore):
    """A memory store that answers like a remote one: every concurrency op suspends."""

    @property
    def decides_locally(self) -> bool:
        return False

    async def concurrency_acquire(
        self, spec: ConcurrencySpec, key: str, ticket: str, queue: bool
    ) -> ConcurrencyReply:
        await asyncio.sleep(0.01)
        return await super().concurrency_acquire(spec, key, ticket, queue)

    async def concurrency_release(self, spec: ConcurrencySpec, key: str, token: str) -> None:
        await asyncio.sleep(0.02)
        await super().concurrency_release(spec, key, token)


@pytest.mark.parametrize("slow", [False, True], ids=["local", "remote"])
@pytest.mark.parametrize("where", ["before", "deciding", "waiting", "call", "release"])
async def test_cancellation_at_every_await_leaks_nothing(where: str, slow: bool) -> None:
    if where in ("deciding", "release") and not slow:
        pytest.skip("a local decision or release never suspends: nothing can land inside it")
    store = SlowStore() if slow else MemoryStore()
    lim = ConcurrencyLimit(1, store=store, name="c", lease=5.0)
    entered = asyncio.Event()

    async def body() -> None:
        entered.set()
        await asyncio.sleep(10)

    task = asyncio.ensure_future(lim.call(body))
    if where == "before":
        task.cancel()  # cancelled before it ever asked the store
    elif where == "deciding":
        await asyncio.sleep(0.005)  # inside the first decision's round trip
        task.cancel()
    elif where == "waiting":
        async with lim.acquire():
            await asyncio.sleep(0.05)
            assert not entered.is_set()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    elif where == "call":
        await entered.wait()
        task.cancel()
    else:
        await entered.wait()
        task.cancel()
        await asyncio.sleep(0.005)
        task.cancel()  # cancelled again, inside the release itself
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)  # a release handed to the background completes
    assert _free(store), store._slots


async def test_cancellation_in_a_redis_round_trip_leaks_nothing() -> None:
    """On a shared store the decision may land before the cancellation: the permit (or the
    place) it granted is given back."""
    server = fakeredis.FakeServer()
    store = RedisStore(fakeredis.FakeAsyncRedis(server=server), prefix="rt")
    lim = ConcurrencyLimit(1, store=store, name="rt", lease=5.0)
    try:
        for delay in (0, 0.0005, 0.001, 0.002, 0.005):
            task = asyncio.ensure_future(lim.call(asyncio.sleep, 0.01))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            async with lim.acquire(timeout=0):  # the one permit is free every time
                pass
    finally:
        await store.aclose()


# ------------------------------------------------------------------ fallback modes


class Down:
    """A shared store that is always unavailable (only what the limit asks of it)."""

    label = "down"
    decides_locally = False

    def __init__(self) -> None:
        from resilience.stores import StoreObservers

        self.observers = StoreObservers()

    async def window_acquire(self, *a: object) -> None:
        raise StoreUnavailable("down")

    async def concurrency_acquire(self, *a: object) -> None:
        raise StoreUnavailable("down")

    async def concurrency_release(self, *a: object) -> None:
        raise StoreUnavailable("down")

    async def concurrency_renew(self, *a: object) -> None:
        raise StoreUnavailable("down")

    async def presence_announce(self, *a: object) -> None:
        raise StoreUnavailable("down")


async def test_fallback_local_takes_the_fair_share() -> None:
    fs = FallbackStore(Down(), "local")  # type: ignore[arg-type]
    lim = ConcurrencyLimit(5, store=fs, name="fb", lease=5.0)
    assert lim.store is fs
    async with lim.acquire(timeout=0), lim.acquire(timeout=0):
        pass  # alone: the whole limit
    # Three deciders seen sharing it: this one (rank 2) takes 5 // 3 = 1.
    fs.fleet._largest = fs.fleet._largest._replace(members=3, rank=2)
    async with lim.acquire(timeout=0):
        with pytest.raises(ConcurrencyLimited):
            async with lim.acquire(timeout=0):
                pass
    assert fs.stats["concurrency_acquire"] >= 4


async def test_fallback_allow_and_deny() -> None:
    allow = ConcurrencyLimit(1, store=Down(), name="a", fallback="allow")  # type: ignore[arg-type]
    async with allow.acquire(timeout=0), allow.acquire(timeout=0):
        pass  # fail open
    deny = ConcurrencyLimit(1, store=Down(), name="d", fallback="deny")  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        async with deny.acquire():
            pass


async def test_a_local_waiter_is_woken_by_a_local_release() -> None:
    fs = FallbackStore(Down(), "local")  # type: ignore[arg-type]
    lim = ConcurrencyLimit(1, store=fs, name="w", lease=30.0)
    order: list[str] = []

    async def second() -> None:
        async with lim.acquire(timeout=5):
            order.append("second")

    async with lim.acquire():
        task = asyncio.ensure_future(second())
        await asyncio.sleep(0.05)
        order.append("first done")
    await asyncio.wait_for(task, 1.0)  # woken by the message, not by its 10 s re-check
    assert order == ["first done", "second"]


# ------------------------------------------------------------------ pipeline and deadline


async def test_in_a_pipeline_the_deadline_bounds_the_wait() -> None:
    from resilience import Retry

    lim = ConcurrencyLimit(1, store=MemoryStore(), name="p")
    pipe = Pipeline(Retry(attempts=1, deadline=0.2), lim)

    async def work() -> str:
        return "ok"

    async with lim.acquire():
        t0 = asyncio.get_running_loop().time()
        # The limit gives up at the deadline (or the retrier's deadline cuts it there).
        with pytest.raises((ConcurrencyLimited, TimeoutError)):
            await pipe.call(work)
        assert asyncio.get_running_loop().time() - t0 < 1.0
    assert await pipe.call(work) == "ok"
    assert not lim.store._slots  # type: ignore[attr-defined]
