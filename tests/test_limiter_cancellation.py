"""No slot, reservation or penalty is lost to a cancellation, on memory and on real Redis.

Every cancellation point of the limiter: during the store call, during the sleep until the
reserved slot, at the wake-up from it, after admission before the protected call runs, in
``all_of`` and in the decorator/pipeline path, and while a penalty is recorded. The invariant
checked after each cancelled task: the log holds exactly the entries of the calls that went on
(the protected function started, or ``acquire`` returned), nothing else.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilience import MemoryStore, RedisStore, SlidingWindowLimiter, StoreUnavailable, all_of
from resilience.stores.base import MERGE_ABOVE, WindowLimit
from resilience.stores.memory import _window as memory_window
from resilience.stores.redis import _window as redis_window
from resilience.stores.redis._keys import window_keys
from tests.eventually import eventually
from tests.redis_servers import RedisServer

Store = MemoryStore | RedisStore


@pytest.fixture
def store(memory_or_redis_store: Store) -> Store:
    return memory_or_redis_store


async def held(store: Store, name: str, key: str = "") -> int:
    """Units the log of ``name``/``key`` holds (windows here are long: nothing leaves)."""
    if isinstance(store, MemoryStore):
        log = store._logs.get((name, key))
        return 0 if log is None else sum(log.weights[log.head :])
    z, m = window_keys(store.prefix, name, key)
    members: list[bytes] = await store.client.zrange(z, 0, -1)  # type: ignore[assignment]
    open_slot = int(await store.client.hget(m, "c") or 0)  # a merged slot's weight
    return sum(
        open_slot if m == b"#" else int(m.rsplit(b":", 1)[1]) if b":" in m else 1 for m in members
    )


async def settled(store: Store, names: Sequence[str], key: str = "") -> list[int]:
    """``held`` for each name once the shielded releases in flight have finished."""
    for _ in range(100):
        await asyncio.sleep(0.01)
        before = [await held(store, n, key) for n in names]
        await asyncio.sleep(0.02)
        if [await held(store, n, key) for n in names] == before:
            return before
    raise AssertionError("the log never settled")  # pragma: no cover


async def cancel_after(task: asyncio.Future[Any], step: int) -> bool:
    """Cancel ``task`` after ``step`` loop iterations (beyond 8: after some milliseconds, so
    also during a sleep); return whether it went on (returned or raised) instead."""
    if step <= 8:
        for _ in range(step):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep((step - 8) * 0.002)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return False
    except Exception:
        return True
    return True


STEPS = range(16)


async def test_cancelled_waiters_leave_nothing_at_any_point(store: Store) -> None:
    # Limit 2 per 60 s, full: every further acquire reserves a slot 60 s ahead and sleeps.
    # Cancelled anywhere (before its store call, during it, while sleeping), none holds
    # anything afterwards.
    lim = SlidingWindowLimiter(2, 60.0, store=store, name="w", guard=0)
    await lim.acquire()
    await lim.acquire()
    for step in STEPS:
        assert not await cancel_after(asyncio.create_task(lim.acquire()), step)
    assert await settled(store, ["w"]) == [2]


async def test_cancelled_calls_hold_exactly_what_went_on(store: Store) -> None:
    # Free capacity (no wait): a task cancelled during its decision holds nothing; one whose
    # acquire returned holds its slot. Weighted costs, to check the weight too. (A limit of
    # MERGE_ABOVE: every admission has its own entry; merged ones: the next test.)
    lim = SlidingWindowLimiter(MERGE_ABOVE, 60.0, store=store, name="free", guard=0)
    went_on = 0
    for step in STEPS:
        if await cancel_after(asyncio.create_task(lim.acquire(cost=3)), step):
            went_on += 3
    assert await settled(store, ["free"]) == [went_on]


async def test_a_merged_admission_cancelled_in_flight_is_never_undercounted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above MERGE_ABOVE an admission for now shares its slot's entry, which no release can
    # take apart: a task cancelled while its decision is in flight to Redis may leave its
    # units counted (capacity wasted for one window), never fewer than the calls that went
    # on. The memory store decides without an await in between: exact there.
    monkeypatch.setattr(memory_window, "MERGE_FROM", 0)  # merge from the first admission
    monkeypatch.setattr(redis_window, "MERGE_FROM", 0)
    lim = SlidingWindowLimiter(10**6, 60.0, store=store, name="merged", guard=0)
    assert lim._merge
    went_on = 0
    for step in STEPS:
        if await cancel_after(asyncio.create_task(lim.acquire(cost=3)), step):
            went_on += 3
    held_now = (await settled(store, ["merged"]))[0]
    if isinstance(store, MemoryStore):
        assert held_now == went_on
    else:
        assert went_on <= held_now <= 3 * len(STEPS)


async def test_cancelled_all_of_waiters_leave_nothing_in_any_quota(store: Store) -> None:
    rpm = SlidingWindowLimiter(1, 60.0, store=store, name="rpm", guard=0)
    tpm = SlidingWindowLimiter(100, 60.0, store=store, name="tpm", guard=0)
    both = all_of(rpm, tpm)
    await both.acquire(cost={"tpm": 10})
    for step in STEPS:
        task = asyncio.create_task(both.acquire(cost={"tpm": 7}))
        assert not await cancel_after(task, step)
    assert await settled(store, ["rpm", "tpm"]) == [1, 10]


async def test_a_cancellation_at_the_wake_up_gives_the_slot_back(store: Store) -> None:
    # The reserved slot lies ~30 ms ahead (a penalty); cancellations land just before, at and
    # just after the wake-up. Whichever way each goes, the log holds exactly the acquires
    # that returned.
    lim = SlidingWindowLimiter(10**6, 60.0, store=store, name="wake", guard=0)
    went_on = 0
    for i in range(12):
        await lim.penalize(0.03)
        task = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0.024 + i * 0.001)
        went_on += await cancel_after(task, 0)
    assert await settled(store, ["wake"]) == [went_on]


async def test_decorated_calls_hold_a_slot_only_if_the_function_ran(store: Store) -> None:
    # The decorator/pipeline path, with a wait (limit 1 per 60 s, then penalties) and
    # without: cancelled before the protected function starts, the call holds nothing; once
    # it started (and was cancelled inside it), its slot stays used.
    lim = SlidingWindowLimiter(MERGE_ABOVE, 60.0, store=store, name="deco", guard=0)
    started = 0

    @lim
    async def call() -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(10)

    for step in STEPS:
        await cancel_after(asyncio.ensure_future(call()), step)
    for i in range(6):
        await lim.penalize(0.02)
        task = asyncio.ensure_future(call())
        await asyncio.sleep(0.015 + i * 0.002)
        await cancel_after(task, 0)
    assert await settled(store, ["deco"]) == [started]

    one = SlidingWindowLimiter(1, 60.0, store=store, name="full", guard=0)
    await one.acquire()

    @one
    async def waits() -> None:  # pragma: no cover - never admitted within the test
        raise AssertionError("admitted")

    for step in STEPS:
        assert not await cancel_after(asyncio.ensure_future(waits()), step)
    assert await settled(store, ["full"]) == [1]


class _Upstream429(Exception):
    retry_after = 30.0


async def penalty_left(store: Store, lim: SlidingWindowLimiter, key: str) -> float:
    """Seconds the key's penalty still blocks it, read from the store itself (not through
    the limiter's fallback wrapper, which keeps a local copy)."""
    d = await store.window_acquire(lim._limits, key, (1,), -1)
    if d.allowed:
        await store.window_release(lim._limits, key, (1,), d.token)
        return 0.0
    return d.wait_us / 1e6


async def test_a_penalty_survives_the_cancellation_of_its_caller(store: Store) -> None:
    # The protected call fails with retry_after = 30 s; its task is cancelled at every point
    # of recording the penalty. The penalty is in the store every time.
    lim = SlidingWindowLimiter(10**6, 60.0, store=store, name="pen", guard=0, key=lambda k: k)
    failed = asyncio.Event()

    @lim
    async def call(k: str) -> None:
        failed.set()
        raise _Upstream429

    for step in range(10):
        failed.clear()
        task = asyncio.ensure_future(call(f"k{step}"))
        await failed.wait()
        await cancel_after(task, step)
        assert await penalty_left(store, lim, f"k{step}") > 29.0, step


class _SlowPenalties(MemoryStore):
    """A store whose penalties take a moment to record (a remote store under load)."""

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        await asyncio.sleep(0.05)
        await super().window_penalize(limits, key, duration_us)


async def test_a_slow_penalty_is_recorded_even_if_its_caller_is_cancelled() -> None:
    store = _SlowPenalties()
    lim = SlidingWindowLimiter(10, 60.0, store=store, name="slow", guard=0)
    task = asyncio.create_task(lim.penalize(5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (await lim.try_acquire()).allowed


async def test_a_penalty_queued_behind_a_hanging_redis_is_recorded(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    # The store's connections are all busy (max_concurrency 2, Redis paused): the penalty
    # queues for one, and its caller is cancelled meanwhile. Once Redis answers again, the
    # penalty is recorded (it used to be dropped with its caller).
    client = aioredis.Redis.from_url(fresh_redis_server.url)
    store = RedisStore(client, prefix=prefix, max_concurrency=2, timeout=3.0)
    lim = SlidingWindowLimiter(10**6, 60.0, store=store, name="q", guard=0, fallback="deny")
    await lim.try_acquire(key="warm")
    blockers: list[asyncio.Task[object]] = []

    @lim
    async def call() -> None:
        fresh_redis_server.signal(signal.SIGSTOP)
        blockers.extend(asyncio.create_task(lim.try_acquire(key=f"b{i}")) for i in range(2))
        await asyncio.sleep(0.05)  # both blockers are in flight, holding the connections
        raise _Upstream429

    task = asyncio.ensure_future(call())
    try:
        await asyncio.sleep(0.1)  # the penalty waits for a connection
        assert not task.done()
        task.cancel()
        await asyncio.sleep(0.05)
    finally:
        fresh_redis_server.signal(signal.SIGCONT)
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(*blockers)

    async def penalty_written() -> bool:  # in the background, once Redis answers
        return await penalty_left(store, lim, "") > 29.0

    await eventually(penalty_written, what="the cancelled caller's penalty reached Redis")
    await store.aclose()


class _BrokenRelease(MemoryStore):
    """A store (a third-party implementation of the protocol) whose release fails oddly."""

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        raise RuntimeError("release failed")


async def test_a_failing_release_never_replaces_the_cancellation() -> None:
    lim = SlidingWindowLimiter(1, 60.0, store=_BrokenRelease(), name="b", guard=0)
    await lim.acquire()
    task = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_lost_release_holds_the_slot_only_until_it_leaves_its_window(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Limit 1 per 0.3 s. A waiter reserves the slot at t0 + 0.3 and is cancelled, and its
    # release cannot reach the store. The entry then holds its slot until it leaves its
    # window (t0 + 0.6), no longer; on Redis its log keeps an expiry.
    async def unreachable(*args: object) -> None:
        raise StoreUnavailable("store unreachable")

    monkeypatch.setattr(store, "window_release", unreachable)
    lim = SlidingWindowLimiter(1, 0.3, store=store, name="lost", guard=0)
    t0 = time.monotonic()
    await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    d = await lim.try_acquire()
    assert not d.allowed
    # The slot is back at t0 + 0.6 (the entry leaves its window), not before; the upper
    # bounds leave a loaded machine's scheduling room but stay far below the log's expiry.
    assert 0.55 < time.monotonic() - t0 + d.retry_after <= 0.75
    if isinstance(store, RedisStore):
        for k in window_keys(store.prefix, "lost", ""):
            assert 0 < await store.client.pttl(k) <= 2700
    await lim.acquire(timeout=1.0)
    assert time.monotonic() - t0 < 0.85
