"""The operator tools against real Redis with a running 2-process fleet (and a Cluster).

An operator's action must take effect fleet-wide at once: a breaker opened by hand stops
upstream calls in every process within the breaker's refresh bound; a pause by name holds
every process off every key, including a key first used after the pause; ``status`` shows
each within a second.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from resilience import RateLimited, RedisStore, SlidingWindowLimiter, admin
from tests import admin_workers
from tests.redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.timeout(90)

Event = tuple[float, int, str]  # (time.time(), pid, key) of a call that reached the upstream


class Fleet:
    """Two worker processes and the upstream calls they report."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out: Any = ctx.Queue()
        self.stop = ctx.Event()
        self.late = ctx.Event()
        extra = (self.late,) if target is admin_workers.limiter_worker else ()
        self.procs = [
            ctx.Process(target=target, args=(*args, *extra, self.stop, self.out), daemon=True)
            for _ in range(2)
        ]
        self.events: list[Event] = []

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()

    def drain(self) -> list[Event]:
        while True:
            try:
                self.events.append(self.out.get_nowait())
            except queue.Empty:
                return self.events

    async def wait_for(self, check: Callable[[list[Event]], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while not check(self.drain()):
            assert time.monotonic() < deadline, "the fleet did not get there in time"
            await asyncio.sleep(0.02)

    def calls(
        self, after: float, before: float = float("inf"), key: str | None = None
    ) -> list[Event]:
        return [e for e in self.drain() if after < e[0] < before and key in (None, e[2])]


def _both_calling(key: str) -> Callable[[list[Event]], bool]:
    return lambda events: len({pid for _, pid, k in events if k == key}) == 2


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    s = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    yield s
    await s.aclose()


@pytest.fixture
def breaker_fleet(redis_server: RedisServer, prefix: str) -> Iterator[Fleet]:
    fleet = Fleet(admin_workers.breaker_worker, redis_server.url, prefix, 0.5)
    fleet.start()
    yield fleet
    fleet.close()


@pytest.fixture
def limiter_fleet(redis_server: RedisServer, prefix: str) -> Iterator[Fleet]:
    fleet = Fleet(admin_workers.limiter_worker, redis_server.url, prefix)
    fleet.start()
    yield fleet
    fleet.close()


async def test_an_operator_open_stops_the_upstream_fleet_wide(
    store: RedisStore, breaker_fleet: Fleet
) -> None:
    fleet = breaker_fleet
    await fleet.wait_for(_both_calling(""), within=30)
    st = await admin.status(store)
    assert [(b.name, [k.state for k in b.keys]) for b in st.breakers] == [("upstream", ["closed"])]
    assert len(st.processes) == 0  # breakers announce no presence (limiters do)

    await admin.breaker_open(store, "upstream", for_=30, who="test@ci")
    opened = time.time()
    st = await admin.status(store)
    assert time.time() - opened < 1.0
    (b,) = st.breakers
    assert b.keys[0].state == "open"
    assert 28 < b.keys[0].open_for <= 30
    await asyncio.sleep(1.5)
    # state_refresh=0.5 s: the refresh bound; pushed, it is a few milliseconds.
    assert fleet.calls(after=opened + 0.5) == []
    assert fleet.calls(after=opened - 1.0, before=opened)  # they were calling before

    await admin.breaker_close(store, "upstream", who="test@ci")
    closed = time.time()
    await fleet.wait_for(lambda _: len({e[1] for e in fleet.calls(after=closed)}) == 2, 2.0)
    log = await admin.audit(store)
    assert [(e.action, e.who) for e in log] == [
        ("breaker close", "test@ci"),
        ("breaker open", "test@ci"),
    ]


async def test_a_pause_by_name_holds_every_process_off_every_key_new_ones_too(
    store: RedisStore, limiter_fleet: Fleet
) -> None:
    fleet = limiter_fleet
    await fleet.wait_for(_both_calling("early"), within=30)

    await admin.pause(store, "api", for_=30, who="test@ci")
    paused = time.time()
    fleet.late.set()  # a tenant first seen during the pause
    st = await admin.status(store)
    assert time.time() - paused < 1.0
    (lim,) = st.limiters
    assert lim.name == "api"
    assert 28 < lim.held_for <= 30
    assert [k.key for k in lim.keys] == ["early"]
    assert lim.keys[0].paused_for > 28
    assert {p.limiters for p in st.processes} == {("api",)}
    assert len(st.processes) == 2
    await asyncio.sleep(1.5)
    # A call admitted just before the pause may be reported a little later by a descheduled
    # worker: 0.8 s of slack, then nothing for 0.7 s.
    assert fleet.calls(after=paused + 0.8) == []

    # The late tenant was registered (by both processes) while held, and is held too.
    (lim,) = (await admin.status(store)).limiters
    assert sorted(k.key for k in lim.keys) == ["early", "late"]

    await admin.resume(store, "api", who="test@ci")
    resumed = time.time()

    def both_on_both(_: list[Event]) -> bool:
        after = fleet.calls(after=resumed)
        return all(len({e[1] for e in after if e[2] == k}) == 2 for k in ("early", "late"))

    await fleet.wait_for(both_on_both, within=2.0)
    (lim,) = (await admin.status(store)).limiters
    assert lim.held_for == 0
    assert all(k.paused_for == 0 for k in lim.keys)


async def test_a_pause_of_one_key_holds_only_that_key(
    store: RedisStore, limiter_fleet: Fleet
) -> None:
    fleet = limiter_fleet
    fleet.late.set()
    await fleet.wait_for(lambda e: _both_calling("early")(e) and _both_calling("late")(e), 30)
    await admin.pause(store, "api", "late", for_=30, who="test@ci")
    paused = time.time()
    await asyncio.sleep(1.5)
    assert fleet.calls(after=paused + 0.8, key="late") == []  # slack as above
    assert len({e[1] for e in fleet.calls(after=paused + 0.3, key="early")}) == 2


async def test_status_and_a_pause_by_name_on_redis_cluster(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """Two stores (two processes' worth) on a 3-master cluster; tenants on different slots:
    the registry (one hash tag) lists them all, and a pause by name holds every tenant,
    including one first used after the pause."""
    stores = [
        RedisStore.from_url(redis_cluster.url, prefix=prefix, timeout=2.0, cluster=True)
        for _ in range(3)
    ]
    ops, *fleet = stores
    try:
        lims = [
            SlidingWindowLimiter(100, 60.0, store=s, name="api", key=lambda t: t, timeout=0)
            for s in fleet
        ]
        tenants = [f"tenant-{i}" for i in range(6)]  # spread over the cluster's slots

        async def noop(tenant: str) -> str:
            return tenant

        for lim in lims:
            for t in tenants:
                await lim.call(noop, t)
        await asyncio.sleep(1.2)  # the registry batches arrive within a second
        (st,) = (await admin.status(ops)).limiters
        assert sorted(k.key for k in st.keys) == tenants
        assert all(k.used == 2 for k in st.keys)

        await admin.pause(ops, "api", for_=30, who="test@ci")
        await asyncio.sleep(0.5)  # pushed over pub/sub
        for lim in lims:
            for t in [*tenants, "brand-new"]:
                with pytest.raises(RateLimited):
                    await lim.call(noop, t)
        await admin.resume(ops, "api", who="test@ci")
        await asyncio.sleep(0.5)
        for lim in lims:
            assert await lim.call(noop, "brand-new") == "brand-new"
    finally:
        for s in stores:
            await s.aclose()
