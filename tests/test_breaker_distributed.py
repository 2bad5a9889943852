"""Distributed circuit-breaker claims, each checked with several OS processes ("spawn") sharing
one real redis-server started by the fixtures.

Every worker process builds its own :class:`resilience.RedisStore` and
:class:`resilience.CircuitBreaker` and reports what it saw through a queue; the assertions
are made in the test process. Bounded: at most 4 processes and a few hundred calls each.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from typing import Any

import pytest
import redis

from resilience import CircuitBreaker, CircuitOpen, RedisStore
from resilience.policies.breaker import DEFAULT_STATE_REFRESH
from resilience.stores.redis._keys import breaker_keys
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

CTX = mp.get_context("spawn")
JOIN_TIMEOUT = 60


def _breaker(url: str, prefix: str, **kw: Any) -> tuple[RedisStore, CircuitBreaker]:
    store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
    return store, CircuitBreaker(store=store, name="api", **kw)


async def _boom() -> None:
    raise ConnectionError("upstream down")


async def _ok() -> str:
    return "ok"


def _run(procs: list[Any], queue: Any, n: int) -> list[Any]:
    for p in procs:
        p.start()
    out = [queue.get(timeout=JOIN_TIMEOUT) for _ in range(n)]
    for p in procs:
        p.join(JOIN_TIMEOUT)
    return out


# ---------------------------------------------------------------- semantics 1 (CB-1)


def trip_worker(url: str, prefix: str, n: int, ready: Any, go: Any, done: Any, q: Any) -> None:
    async def main() -> dict[str, Any]:
        # state_refresh = 30 s: only the pushed trip can make the next call fail fast.
        store, cb = _breaker(
            url, prefix, failure_threshold=10, window=60, break_duration=30, state_refresh=30
        )
        changes: list[Any] = []
        cb.add_listener(changes.append)
        await cb.state()  # connect and load scripts before the race
        await cb.call(_ok)  # believe "closed" and subscribe to pushed transitions
        await _until_subscribed(store)
        ready.wait()
        go.wait()
        res = await asyncio.gather(*[cb.call(_boom) for _ in range(n)], return_exceptions=True)
        done.wait()  # every process has recorded its failures
        # The trip is pushed to every process: let the event loop take delivery (the barrier
        # blocked it), then the next call anywhere fails fast, long before state_refresh.
        await asyncio.sleep(0.05)
        try:
            await cb.call(_ok)
            nxt: Any = "ran"
        except CircuitOpen as e:
            nxt = e.retry_after
        await store.aclose()
        return {
            "changes": [(c.old, c.new) for c in changes],
            "errors": sorted(type(r).__name__ for r in res),
            "next": nxt,
        }

    q.put(asyncio.run(main()))


def test_20_concurrent_failures_across_processes_trip_exactly_once(
    redis_server: RedisServer, prefix: str
) -> None:
    q = CTX.Queue()
    ready, go, done = CTX.Barrier(5), CTX.Event(), CTX.Barrier(4)
    procs = [
        CTX.Process(target=trip_worker, args=(redis_server.url, prefix, 5, ready, go, done, q))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    ready.wait(timeout=JOIN_TIMEOUT)
    go.set()
    t0 = time.monotonic()
    out = [q.get(timeout=JOIN_TIMEOUT) for _ in range(4)]
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(JOIN_TIMEOUT)
    changes = [c for o in out for c in o["changes"]]
    assert changes == [("closed", "open")]  # one state change, fleet-wide
    errors = [e for o in out for e in o["errors"]]
    assert errors.count("ConnectionError") >= 10  # 10 counted, the rest raced the trip
    # ... and every process's next call failed fast with ~30 s left (30 minus the time the
    # race and the delivery wait took; `elapsed` bounds both).
    for o in out:
        assert isinstance(o["next"], float), o
        assert 30 - elapsed - 0.5 <= o["next"] <= 30


def fresh_process_worker(url: str, prefix: str, q: Any) -> None:
    async def main() -> Any:
        store, cb = _breaker(url, prefix, failure_threshold=10, window=60, break_duration=30)
        try:
            await cb.call(_ok)
            return "ran"
        except CircuitOpen as e:
            return e.retry_after
        finally:
            await store.aclose()

    q.put(asyncio.run(main()))


async def test_a_process_that_never_called_fails_fast_at_once(
    redis_server: RedisServer, prefix: str
) -> None:
    store, cb = _breaker(redis_server.url, prefix, failure_threshold=2, break_duration=30)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await cb.call(_boom)
    await store.aclose()
    q = CTX.Queue()
    p = CTX.Process(target=fresh_process_worker, args=(redis_server.url, prefix, q))
    (retry_after,) = await asyncio.to_thread(_run, [p], q, 1)
    assert isinstance(retry_after, float)
    assert 25 < retry_after <= 30


# ---------------------------------------------------------------- semantics 3 (CB-3, CB-4)


def probe_worker(url: str, prefix: str, n: int, ready: Any, go: Any, q: Any) -> None:
    async def main() -> dict[str, int]:
        store, cb = _breaker(
            url,
            prefix,
            failure_threshold=1,
            break_duration=0.3,
            half_open_max_calls=2,
            probe_lease=10,
        )
        # Warm n connections, so that the n callers below race at once.
        await asyncio.gather(*[cb.state() for _ in range(n)])
        ran = 0

        async def probe() -> None:
            nonlocal ran
            ran += 1
            await asyncio.sleep(2.0)  # hold the permit while the others arrive

        ready.wait()
        go.wait()
        res = await asyncio.gather(*[cb.call(probe) for _ in range(n)], return_exceptions=True)
        await store.aclose()
        return {
            "ran": ran,
            "rejected": sum(isinstance(r, CircuitOpen) for r in res),
            "other": sum(r is not None and not isinstance(r, CircuitOpen) for r in res),
        }

    q.put(asyncio.run(main()))


async def test_100_callers_after_the_break_run_exactly_max_probes(
    redis_server: RedisServer, prefix: str
) -> None:
    q = CTX.Queue()
    ready, go = CTX.Barrier(5), CTX.Event()
    procs = [
        CTX.Process(target=probe_worker, args=(redis_server.url, prefix, 25, ready, go, q))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    await asyncio.to_thread(ready.wait, JOIN_TIMEOUT)
    store, cb = _breaker(
        redis_server.url,
        prefix,
        failure_threshold=1,
        break_duration=0.3,
        half_open_max_calls=2,
        probe_lease=10,
    )
    with pytest.raises(ConnectionError):
        await cb.call(_boom)
    assert await cb.state() == "open"
    await asyncio.sleep(0.35)
    go.set()
    out = [await asyncio.to_thread(q.get, True, JOIN_TIMEOUT) for _ in range(4)]
    for p in procs:
        p.join(JOIN_TIMEOUT)
    assert sum(o["ran"] for o in out) == 2  # fleet-wide, not per process
    assert sum(o["rejected"] for o in out) == 98
    assert sum(o["other"] for o in out) == 0
    assert await cb.state() == "closed"  # the successful probe closed it
    await store.aclose()


def crash_worker(url: str, prefix: str, q: Any) -> None:
    async def main() -> None:
        _store, cb = _breaker(url, prefix, failure_threshold=1, break_duration=0.2, probe_lease=0.6)

        async def crash() -> None:
            q.put("probing")
            q.close()
            q.join_thread()  # the message is on its way
            os._exit(3)  # the prober dies holding its permit

        await cb.call(crash)

    asyncio.run(main())


async def test_a_crashed_probers_lease_expires(redis_server: RedisServer, prefix: str) -> None:
    store, cb = _breaker(
        redis_server.url, prefix, failure_threshold=1, break_duration=0.2, probe_lease=0.6
    )
    with pytest.raises(ConnectionError):
        await cb.call(_boom)
    await asyncio.sleep(0.25)
    q = CTX.Queue()
    p = CTX.Process(target=crash_worker, args=(redis_server.url, prefix, q))
    p.start()
    assert await asyncio.to_thread(q.get, True, JOIN_TIMEOUT) == "probing"
    await asyncio.to_thread(p.join, JOIN_TIMEOUT)
    assert p.exitcode == 3
    t0 = time.monotonic()
    with pytest.raises(CircuitOpen) as info:  # the dead prober still holds the only permit
        await cb.call(_ok)
    assert 0 < info.value.retry_after <= 0.6
    await asyncio.sleep(info.value.retry_after + 0.05)
    assert await cb.call(_ok) == "ok"  # its lease expired: a new probe ran and closed it
    assert time.monotonic() - t0 < 0.6 + 2.0
    assert await cb.state() == "closed"
    await store.aclose()


# ---------------------------------------------------------------- semantics 5 (CB-7)


def skewed_worker(url: str, prefix: str, skew: float, n: int, q: Any) -> None:
    real_time, real_ns = time.time, time.time_ns
    time.time = lambda: real_time() + skew
    time.time_ns = lambda: real_ns() + int(skew * 1e9)

    async def main() -> list[str]:
        store, cb = _breaker(url, prefix, failure_threshold=10, window=60, break_duration=30)
        states: list[str] = []
        for _ in range(n):
            with pytest.raises(ConnectionError):
                await cb.call(_boom)
            states.append(await cb.state())
        await store.aclose()
        return states

    q.put(asyncio.run(main()))


async def test_worker_clocks_do_not_matter(redis_server: RedisServer, prefix: str) -> None:
    q = CTX.Queue()
    plan = [(+30.0, 5), (-30.0, 4), (+30.0, 1)]  # 9 failures, then the 10th trips
    seen = []
    for skew, n in plan:
        p = CTX.Process(target=skewed_worker, args=(redis_server.url, prefix, skew, n, q))
        seen += (await asyncio.to_thread(_run, [p], q, 1))[0]
    assert seen == ["closed"] * 9 + ["open"]
    r = redis.Redis.from_url(redis_server.url)
    try:
        s_key = breaker_keys(prefix, "api", "")[0]
        open_until = int(r.hget(s_key, "ou"))  # type: ignore[arg-type]
        sec, usec = r.time()
        left = (open_until - (sec * 1_000_000 + usec)) / 1e6
        # Open for 30 s by Redis's clock (minus the time since the trip: the worker's exit
        # and join, up to a second or two on a loaded machine), not 30 +- 30.
        assert 28.0 <= left <= 30.0
    finally:
        r.close()


# ---------------------------------------------------------------- semantics 7 (CB-12)


def _commands(r: redis.Redis) -> tuple[int, dict[str, int]]:
    """Script calls (the breaker's decisions) since CONFIG RESETSTAT, and every command seen.

    Connection set-up (``CLIENT SETINFO``, ``HELLO``) is per connection, not per call, and is
    excluded from the first number; the breakdown is kept for the assertion message.
    """
    stats = {k: int(v["calls"]) for k, v in r.info("commandstats").items()}
    scripts = sum(n for k, n in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return scripts, stats


def quiet_worker(url: str, prefix: str, mode: str, n: int, ready: Any, go: Any, q: Any) -> None:
    async def main() -> dict[str, int]:
        store, cb = _breaker(url, prefix, failure_threshold=5, break_duration=5)
        ready.wait()
        go.wait()
        rejected = ran = 0
        for _ in range(n):
            try:
                await cb.call(_ok)
                ran += 1
            except CircuitOpen:
                rejected += 1
        await store.aclose()
        return {"ran": ran, "rejected": rejected}

    q.put(asyncio.run(main()))


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_round_trips_per_process(
    fresh_redis_server: RedisServer, prefix: str, mode: str
) -> None:
    """Open: at most one Redis call per process until the deadline. Closed: successes cost no
    round trip (one refresh per process per state_refresh at most; the run is shorter)."""
    url = fresh_redis_server.url
    # state_refresh=0: the parent only opens the breaker; it follows no pushed transitions, so
    # its subscription's start (which re-seeds a known open state) adds no call to the count.
    store, cb = _breaker(url, prefix, failure_threshold=5, break_duration=5, state_refresh=0)
    if mode == "open":
        await cb.open()
    await store.breaker_acquire(cb.spec, "warm")  # load the acquire script once
    # ... and the registry's (each process registers the breaker once for the operator tools,
    # in the background: docs/operations.md; racing to load it would add EVALs).
    await store.registry_put("breaker", "warm", {}, [])
    q = CTX.Queue()
    ready, go = CTX.Barrier(4), CTX.Event()
    procs = [
        CTX.Process(target=quiet_worker, args=(url, prefix, mode, 1000, ready, go, q))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    await asyncio.to_thread(ready.wait, JOIN_TIMEOUT)
    r = redis.Redis.from_url(url)
    r.config_resetstat()
    t0 = time.monotonic()
    go.set()
    out = [await asyncio.to_thread(q.get, True, JOIN_TIMEOUT) for _ in range(3)]
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(JOIN_TIMEOUT)
    commands, seen = _commands(r)
    r.close()
    await store.aclose()
    # Besides the breaker: each process's one registry write.
    registry = 3
    if mode == "open":
        assert all(o == {"ran": 0, "rejected": 1000} for o in out)
        assert commands <= 3 + registry, seen  # 3000 calls, one EVALSHA per process
    else:
        assert all(o == {"ran": 1000, "rejected": 0} for o in out)
        # 3000 successes: each process asks once, then again at most every state_refresh.
        # (The workers' breakers use the default state_refresh; the parent's is 0.)
        refresh = DEFAULT_STATE_REFRESH
        assert commands <= 3 * (1 + int(elapsed / refresh) + 1) + registry, seen


# ---------------------------------------------------------------- push invalidation (pub/sub)


def _subscribed(store: RedisStore) -> bool:
    return store._events.connected


async def _until_subscribed(store: RedisStore, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not _subscribed(store):
        assert time.monotonic() < deadline, "the breaker-events subscription did not come up"
        await asyncio.sleep(0.01)


def believer_worker(url: str, prefix: str, ready: Any, tripped: Any, q: Any) -> None:
    async def main() -> Any:
        store, cb = _breaker(url, prefix, failure_threshold=2, break_duration=30, state_refresh=30)
        for _ in range(3):
            await cb.call(_ok)
        await _until_subscribed(store)
        await cb.call(_ok)  # "closed", fresh for 30 s
        ready.set()
        await asyncio.to_thread(tripped.wait, JOIN_TIMEOUT)
        await asyncio.sleep(0.1)
        try:
            await cb.call(_ok)
            nxt: Any = "ran"
        except CircuitOpen as e:
            nxt = e.retry_after
        await store.aclose()
        return nxt

    q.put(asyncio.run(main()))


async def test_a_trip_elsewhere_is_pushed_to_a_process_that_believes_closed(
    redis_server: RedisServer, prefix: str
) -> None:
    """Without the push, B would trust its "closed" for state_refresh = 30 s."""
    q = CTX.Queue()
    ready, tripped = CTX.Event(), CTX.Event()
    p = CTX.Process(target=believer_worker, args=(redis_server.url, prefix, ready, tripped, q))
    p.start()
    try:
        assert await asyncio.to_thread(ready.wait, JOIN_TIMEOUT)
        store, cb = _breaker(redis_server.url, prefix, failure_threshold=2, break_duration=30)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await cb.call(_boom)
        tripped.set()
        nxt = await asyncio.to_thread(q.get, True, JOIN_TIMEOUT)
        await store.aclose()
    finally:
        await asyncio.to_thread(p.join, JOIN_TIMEOUT)
    assert isinstance(nxt, float), nxt
    assert 29.0 <= nxt <= 30


async def test_the_subscription_comes_back_after_a_redis_restart(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    url = fresh_redis_server.url
    s1, a = _breaker(url, prefix, failure_threshold=2, break_duration=30)
    s2, b = _breaker(url, prefix, failure_threshold=2, break_duration=30, state_refresh=30)
    assert await b.call(_ok) == "ok"
    await _until_subscribed(s2)
    fresh_redis_server.restart()
    await asyncio.sleep(0.05)
    await _until_subscribed(s2)
    assert await b.call(_ok) == "ok"  # "closed" again, fresh for 30 s
    deadline = time.monotonic() + 5
    while True:  # a's pooled connections died with the server: reconnect before the trip
        try:
            await a.store.breaker_acquire(a.spec, "warm")
            break
        except Exception:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await a.call(_boom)
    assert await a.state() == "open"
    await asyncio.sleep(0.1)
    with pytest.raises(CircuitOpen) as info:
        await b.call(_ok)
    assert 29.0 <= info.value.retry_after <= 30
    await s1.aclose()
    await s2.aclose()


async def test_successes_while_closed_cost_no_script_with_the_subscription_up(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    store, cb = _breaker(fresh_redis_server.url, prefix, failure_threshold=2, state_refresh=30)
    assert await cb.call(_ok) == "ok"
    await _until_subscribed(store)
    assert await cb.call(_ok) == "ok"
    r = redis.Redis.from_url(fresh_redis_server.url)
    r.config_resetstat()
    for _ in range(1000):
        assert await cb.call(_ok) == "ok"
    commands, seen = _commands(r)
    r.close()
    await store.aclose()
    assert commands == 0, seen


async def test_aclose_stops_the_subscription_task(redis_server: RedisServer, prefix: str) -> None:
    store, cb = _breaker(redis_server.url, prefix, state_refresh=30)
    assert await cb.call(_ok) == "ok"
    await _until_subscribed(store)
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith(f"resilience:{prefix}:")]
    assert len(tasks) == 1
    await store.aclose()
    assert tasks[0].done()
    # The registry's background writer (not the store's) ends by itself within its interval.
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("resilience:")]
    assert all(t.get_name() == "resilience:registry" for t in left)
    await asyncio.wait_for(asyncio.gather(*left), 3.0)


async def test_a_trip_is_pushed_on_redis_cluster_too(redis_cluster: Any, prefix: str) -> None:
    """A classic PUBLISH reaches every node: the subscriber may sit on any primary."""
    stores = [
        RedisStore.from_url(redis_cluster.url, prefix=prefix, timeout=2.0, cluster=True)
        for _ in range(2)
    ]
    a = CircuitBreaker(2, store=stores[0], name="api", break_duration=30)
    b = CircuitBreaker(2, store=stores[1], name="api", break_duration=30, state_refresh=30)
    assert await b.call(_ok) == "ok"
    await _until_subscribed(stores[1])
    assert await b.call(_ok) == "ok"
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await a.call(_boom)
    await asyncio.sleep(0.1)
    with pytest.raises(CircuitOpen):
        await b.call(_ok)
    for s in stores:
        await s.aclose()
