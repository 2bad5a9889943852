"""Cancellation at every await of the breaker's call path (issue 12, items 1 and 2).

The call path awaits: the store's acquire, the listeners of a transition that acquire made
(open -> half-open), the call itself, the store's record (a probe's outcome, or a failure),
the listeners of the transition that record made, and the return of a probe's permit. A
caller cancelled at any of them must

- never leak a probe permit: another caller probes within 1 s (the lease is 30 s here), or
  the cancelled probe's outcome is still recorded;
- never lose a transition it caused: listeners and telemetry hear of it exactly once.

``Held`` wraps a store and pauses one chosen operation, either *before* the real one runs
(waiting for a connection) or *after* it ran (its reply on the way back), so each point is
hit deterministically; the last test cancels at random points against a real redis-server.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilience import CircuitBreaker, CircuitOpen, MemoryStore, RedisStore, StateChange
from resilience.stores.base import BreakerReply
from resilience.stores.redis._keys import breaker_channel
from tests.redis_servers import RedisServer

LEASE = 30.0  # a leaked permit would refuse every caller for this long
BREAK = 0.05


class Upstream(Exception):
    pass


class Held:
    """A store whose operation ``op`` pauses once, ``when`` = before or after the real one."""

    # It pauses inside a decision: a caller can be cancelled mid-decision, as with Redis.
    decides_locally = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.label = inner.label
        self.op = ""
        self.when = "before"
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def hold(self, op: str, when: str) -> None:
        self.op, self.when = op, when
        self.entered.clear()
        self.release.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _run(self, name: str, *args: Any) -> BreakerReply:
        fn = getattr(self.inner, name)
        if self.op != name:
            return await fn(*args)
        self.op = ""
        if self.when == "before":
            self.entered.set()
            await self.release.wait()
            return await fn(*args)
        reply = await fn(*args)
        self.entered.set()
        await self.release.wait()
        return reply

    async def breaker_acquire(self, *args: Any) -> BreakerReply:
        return await self._run("breaker_acquire", *args)

    async def breaker_record(self, *args: Any) -> BreakerReply:
        return await self._run("breaker_record", *args)

    async def breaker_admin(self, *args: Any) -> BreakerReply:
        return await self._run("breaker_admin", *args)


@pytest.fixture(params=["memory", "redis"])
async def inner(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=2.0)
    yield store
    await store.aclose()


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every ``breaker_state_change`` telemetry emission, as ``(old, new)``."""
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "resilience.telemetry.breaker_state_change",
        lambda ctx, *, breaker, old, new: seen.append((old, new)),
    )
    return seen


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def boom() -> None:
    raise Upstream()


async def trip(cb: CircuitBreaker) -> None:
    with pytest.raises(Upstream):
        await cb.call(boom)


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def probes_within(cb: CircuitBreaker, seconds: float = 1.0) -> float:
    """Call until a call runs (as a probe); seconds it took. Fails after ``seconds``."""
    t0 = time.monotonic()

    async def ok() -> str:
        return "ok"

    while True:
        try:
            assert await cb.call(ok) == "ok"
            return time.monotonic() - t0
        except CircuitOpen as exc:
            refused = exc
        assert time.monotonic() - t0 < seconds, f"refused {refused.retry_after:.1f} s more"
        await asyncio.sleep(0.02)


def pairs(changes: list[StateChange]) -> list[tuple[str, str]]:
    return [(c.old, c.new) for c in changes]


# ---------------------------------------------------------------- item 1: the probe's permit


async def test_probe_cancelled_while_an_async_listener_runs_returns_its_permit(
    inner: Any, transitions: list[tuple[str, str]]
) -> None:
    """(a) cancelled in the open -> half-open listener: the permit comes back at once, and the
    listeners of that transition still all run (in the background)."""
    entered, gate = asyncio.Event(), asyncio.Event()
    later: list[StateChange] = []
    blocked = False

    async def slow(change: StateChange) -> None:
        nonlocal blocked
        if change.new == "half_open" and not blocked:
            blocked = True
            entered.set()
            await gate.wait()

    cb = CircuitBreaker(
        1, 60, BREAK, store=inner, name="a", probe_lease=LEASE, listeners=[slow, later.append]
    )
    await trip(cb)
    await asyncio.sleep(BREAK + 0.03)
    ran = 0

    async def upstream() -> str:
        nonlocal ran
        ran += 1
        return "ok"

    t = asyncio.create_task(cb.call(upstream))
    await entered.wait()
    await cancel(t)
    assert ran == 0
    assert await probes_within(cb) < 1.0
    gate.set()
    await until(lambda: len(later) == 3)
    assert pairs(later) == [("closed", "open"), ("half_open", "closed"), ("open", "half_open")]
    assert sorted(transitions) == sorted(pairs(later))
    assert await cb.state() == "closed"


async def test_probe_cancelled_while_its_success_waits_for_the_store(
    inner: Any, transitions: list[tuple[str, str]]
) -> None:
    """(b) cancelled while recording its successful outcome, before the store got it (waiting
    for a connection): the outcome is still recorded, so the breaker closes."""
    held = Held(inner)
    seen: list[StateChange] = []
    cb = CircuitBreaker(
        1, 60, BREAK, store=held, name="b", probe_lease=LEASE, listeners=[seen.append]
    )
    await trip(cb)
    await asyncio.sleep(BREAK + 0.03)
    held.hold("breaker_record", "before")

    async def ok() -> str:
        return "ok"

    t = asyncio.create_task(cb.call(ok))
    await held.entered.wait()
    await cancel(t)
    held.release.set()  # the connection frees up
    await until(lambda: ("half_open", "closed") in pairs(seen), timeout=1.0)
    assert await cb.state() == "closed"
    assert await probes_within(cb) < 1.0
    assert pairs(seen) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert transitions == pairs(seen)


@pytest.mark.parametrize("when", ["before", "after"])
async def test_probe_cancelled_while_acquiring_returns_its_permit(
    inner: Any, transitions: list[tuple[str, str]], when: str
) -> None:
    """Cancelled while the store decides (before it ran, or with its reply on the way): the
    permit it granted comes back, and the open -> half-open transition it made is reported."""
    held = Held(inner)
    seen: list[StateChange] = []
    cb = CircuitBreaker(
        1, 60, BREAK, store=held, name="c", probe_lease=LEASE, listeners=[seen.append]
    )
    await trip(cb)
    await asyncio.sleep(BREAK + 0.03)
    held.hold("breaker_acquire", when)

    async def ok() -> str:
        return "ok"

    t = asyncio.create_task(cb.call(ok))
    await held.entered.wait()
    await cancel(t)
    held.release.set()
    await until(lambda: ("open", "half_open") in pairs(seen), timeout=1.0)
    assert await probes_within(cb) < 1.0
    assert pairs(seen) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert transitions == pairs(seen)


async def test_probe_cancelled_during_the_call_and_again_while_returning_its_permit(
    inner: Any,
) -> None:
    """The call itself, then the (shielded) return of the permit cancelled a second time."""
    held = Held(inner)
    cb = CircuitBreaker(1, 60, BREAK, store=held, name="d", probe_lease=LEASE)
    await trip(cb)
    await asyncio.sleep(BREAK + 0.03)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(10)

    t = asyncio.create_task(cb.call(hang))
    await started.wait()
    held.hold("breaker_record", "before")
    t.cancel()
    await held.entered.wait()  # the permit's return waits for the store
    await cancel(t)  # cancelled again meanwhile
    held.release.set()
    assert await probes_within(cb) < 1.0
    assert await cb.state() == "closed"


# ---------------------------------------------------------------- item 2: transitions


async def test_a_trip_whose_reply_is_lost_to_a_cancellation_is_still_reported(
    inner: Any, transitions: list[tuple[str, str]]
) -> None:
    """The failure was recorded (and tripped the breaker in the store), then the caller was
    cancelled before the reply came back: listeners and telemetry still hear of the trip."""
    held = Held(inner)
    seen: list[StateChange] = []
    cb = CircuitBreaker(1, 60, 30, store=held, name="e", listeners=[seen.append])
    held.hold("breaker_record", "after")
    t = asyncio.create_task(cb.call(boom))
    await held.entered.wait()
    await cancel(t)
    assert await cb.state() == "open"  # the trip happened in the store
    held.release.set()
    await until(lambda: len(seen) == 1, timeout=1.0)
    assert pairs(seen) == [("closed", "open")]
    assert transitions == [("closed", "open")]
    with pytest.raises(CircuitOpen):  # and this process knows it
        await cb.call(boom)
    await asyncio.sleep(0.05)
    assert len(seen) == 1  # exactly once


async def test_listeners_after_a_cancelled_async_listener_still_run(
    inner: Any, transitions: list[tuple[str, str]]
) -> None:
    """Cancelled in an async listener of the trip its failure made (and of the close its
    probe made): the later listeners still run, once each."""
    entered = {s: asyncio.Event() for s in ("open", "half_open", "closed")}
    gate = {s: asyncio.Event() for s in ("open", "half_open", "closed")}
    gate["half_open"].set()
    later: list[StateChange] = []

    async def slow(change: StateChange) -> None:
        entered[change.new].set()
        await gate[change.new].wait()

    cb = CircuitBreaker(1, 60, BREAK, store=inner, name="f", listeners=[slow, later.append])
    t = asyncio.create_task(cb.call(boom))
    await entered["open"].wait()
    await cancel(t)
    assert await cb.state() == "open"
    gate["open"].set()
    await until(lambda: len(later) == 1)
    await asyncio.sleep(BREAK + 0.03)

    async def ok() -> str:
        return "ok"

    probe = asyncio.create_task(cb.call(ok))
    await entered["closed"].wait()  # the probe succeeded: its half-open -> closed listener
    await cancel(probe)
    assert await cb.state() == "closed"
    gate["closed"].set()
    await until(lambda: len(later) == 3)
    assert pairs(later) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert transitions == pairs(later)


async def test_an_operator_open_cancelled_after_the_store_applied_it_is_reported(
    inner: Any, transitions: list[tuple[str, str]]
) -> None:
    held = Held(inner)
    seen: list[StateChange] = []
    cb = CircuitBreaker(3, 60, 30, store=held, name="g", listeners=[seen.append])
    held.hold("breaker_admin", "after")
    t = asyncio.create_task(cb.open(duration=60))
    await held.entered.wait()
    await cancel(t)
    held.release.set()
    await until(lambda: len(seen) == 1, timeout=1.0)
    assert pairs(seen) == [("closed", "open")]
    assert transitions == [("closed", "open")]


async def test_random_cancellations_never_lose_a_trip(
    redis_server: RedisServer, prefix: str, transitions: list[tuple[str, str]]
) -> None:
    """Against a real redis-server: every trip the store published was reported by this
    process (the only one making transitions), exactly once, wherever the cancel landed."""
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    seen: list[StateChange] = []
    cb = CircuitBreaker(1, 60, 30, store=store, name="h", listeners=[seen.append])
    sub = aioredis.Redis.from_url(redis_server.url)
    ps = sub.pubsub()
    await ps.subscribe(breaker_channel(prefix))
    published: list[str] = []

    async def listen() -> None:
        async for msg in ps.listen():
            if msg["type"] == "message":
                published.append(msg["data"].decode())

    reader = asyncio.create_task(listen())
    rng = random.Random(12)
    await cb.state()  # scripts loaded, connection warm

    async def slow_boom() -> None:
        await asyncio.sleep(rng.choice([0, 0, 0.001]))
        raise Upstream()

    try:
        for _ in range(40):
            t = asyncio.create_task(cb.call(slow_boom))
            for _ in range(rng.randrange(0, 12)):
                await asyncio.sleep(0)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.002)
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
            await cb.reset()  # uncancelled: reported as open -> closed when it was open
        await asyncio.sleep(0.3)  # background reports and pub/sub delivery
        trips = [m for m in published if m.endswith(" open")]
        assert len(trips) == pairs(seen).count(("closed", "open")), (published, pairs(seen))
        assert len(trips) >= 5  # the run did trip the breaker a fair number of times
        assert transitions == pairs(seen)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ps.aclose()  # type: ignore[no-untyped-call,unused-ignore]
        await sub.aclose()
        await store.aclose()


@pytest.mark.parametrize("which", ["failure_on", "failure_if_result"])
async def test_a_predicate_that_raises_on_a_probe_returns_its_permit(
    inner: Any, which: str
) -> None:
    """Not a cancellation, the same promise: a user predicate raising while it judges a
    probe's outcome must not keep the permit for the whole lease."""

    def broken(_: object) -> bool:
        raise RuntimeError("predicate bug")

    kw: dict[str, Any] = {which: broken}
    cb = CircuitBreaker(1, 60, BREAK, store=inner, name="p", probe_lease=LEASE, **kw)
    await cb.open(duration=BREAK)
    await asyncio.sleep(BREAK + 0.03)

    async def fails() -> None:
        raise Upstream()

    async def ok() -> str:
        return "ok"

    with pytest.raises(RuntimeError, match="predicate bug"):
        await cb.call(fails if which == "failure_on" else ok)
    cb._failure_on = None
    cb._failure_if_result = None
    assert await probes_within(cb) < 1.0
