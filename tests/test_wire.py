"""The Redis store's command path (``resilience/stores/redis/_wire.py``) against real servers."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from resilience import RedisStore, SlidingWindowLimiter
from resilience.stores.base import WindowLimit
from resilience.stores.redis._health import health_of
from resilience.stores.redis._wire import Wire
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

LIMITS = (WindowLimit("w", 100, 10_000_000),)

_text = st.text(min_size=0, max_size=40)
_ascii = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    sha=st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
    keys=st.lists(_text, max_size=6),
    args=st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), _ascii), max_size=8),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
)
def test_packed_evalsha_is_what_redis_py_would_send(
    sha: str, keys: list[str], args: list[int | str], encoding: str
) -> None:
    if encoding == "latin-1":
        keys = [k.encode("latin-1", "replace").decode("latin-1") for k in keys]
    client = aioredis.Redis(encoding=encoding)
    wire = Wire(client)
    expected = b"".join(
        Connection(encoding=encoding).pack_command("EVALSHA", sha, len(keys), *keys, *args)
    )
    assert wire.pack_evalsha(sha, keys, args) == expected
    assert wire.pack_evalsha(sha, keys, args) == expected  # from the cached head


def test_cluster_and_single_connection_clients_keep_redis_pys_path() -> None:
    from redis.asyncio.cluster import RedisCluster

    assert Wire.supports(aioredis.Redis())
    assert not Wire.supports(aioredis.Redis(single_connection_client=True))
    assert not Wire.supports(RedisCluster(host="127.0.0.1", port=1))
    assert RedisStore(aioredis.Redis(single_connection_client=True))._wire is None


async def test_the_store_keeps_its_own_connections_and_leaves_the_pool_to_the_app(
    redis_server: RedisServer, prefix: str
) -> None:
    # A pool of one connection: the store's burst of 20 calls queues on its own single
    # connection, and the application's commands on store.client still find the pool's.
    store = RedisStore.from_url(redis_server.url, prefix=prefix, max_connections=1)
    wire = store._wire
    assert wire is not None
    assert wire.keep

    async def app() -> list[Any]:
        return [await store.client.set(f"{prefix}:app", i) for i in range(20)]

    burst = asyncio.gather(*[store.window_acquire(LIMITS, "", (1,), -1) for _ in range(20)])
    app_task = asyncio.ensure_future(app())
    decisions = await burst
    await app_task
    assert all(d.allowed for d in decisions)
    assert len(wire._idle) == 1  # never more than max_concurrency connections of its own
    assert await store.client.get(f"{prefix}:app") == b"19"
    assert wire._idle[0] not in wire.pool._available_connections
    await store.aclose()
    assert wire._idle == []


async def test_a_blocking_pool_is_borrowed_from_and_given_back(
    redis_server: RedisServer, prefix: str
) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(redis_server.url, max_connections=2)
    client = aioredis.Redis(connection_pool=pool)
    store = RedisStore(client, prefix=prefix)
    assert store._wire is not None
    assert not store._wire.keep
    decisions = await asyncio.gather(
        *[store.window_acquire(LIMITS, "", (1,), -1) for _ in range(30)]
    )
    assert sum(d.allowed for d in decisions) == 30
    assert not pool._in_use_connections
    assert store._wire._idle == []
    await client.aclose()
    await pool.disconnect()  # redis-py < 5.1 leaves a pool it did not create open


async def test_decoded_replies_work(redis_server: RedisServer, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisStore(client, prefix=prefix)
    lim = SlidingWindowLimiter(2, 10.0, store=store, name="dec", guard=0)
    assert [(await lim.try_acquire()).allowed for _ in range(3)] == [True, True, False]
    await store.aclose()  # the store's own connections too, not only the client's pool
    await client.connection_pool.disconnect()  # redis-py < 5.1 may leave it open


async def test_connections_killed_by_the_server_are_replaced_without_an_outage(
    redis_server: RedisServer, redis_client: aioredis.Redis, prefix: str
) -> None:
    # The server drops every client connection (what a restart, a failover or an idle timeout
    # does to a pool): the next calls repeat once through the client's retry policy and
    # succeed; the store never enters degraded mode.
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    lim = SlidingWindowLimiter(1000, 10.0, store=store, name="stale", guard=0, fallback="deny")
    await asyncio.gather(*[lim.try_acquire() for _ in range(8)])  # several kept connections
    assert store._wire is not None
    assert len(store._wire._idle) >= 2
    killed = await redis_client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= len(store._wire._idle)
    decisions = await asyncio.gather(*[lim.try_acquire() for _ in range(8)])
    assert all(d.allowed for d in decisions)
    assert not health_of(store).degraded
    await store.aclose()


async def test_closing_the_store_disconnects_a_connection_in_use_by_a_call_in_flight(
    redis_server: RedisServer, prefix: str
) -> None:
    # aclose() disconnects the idle connections; one in use by a call in flight (a
    # limiter's background presence announcement, say) is disconnected as that call ends,
    # not left open (redis-py < 5.1 would close it as it is garbage collected, after its event
    # loop has closed: "Event loop is closed").
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    wire = store._wire
    assert wire is not None
    assert (await store.window_acquire(LIMITS, "", (1,), -1)).allowed
    assert len(wire._idle) == 1
    conn = wire._idle[0]
    try:
        call = asyncio.ensure_future(store.window_acquire(LIMITS, "", (1,), -1))
        for _ in range(20):  # until the call has taken the connection (a few loop iterations)
            if not wire._idle:
                break
            await asyncio.sleep(0)
        assert not wire._idle
        assert not call.done()
        await store.aclose()
        assert (await call).allowed  # the call in flight completes
        assert not conn.is_connected
        assert wire._idle == []
    finally:
        await conn.disconnect()  # (a no-op when the test passes)


def _in_forked_child(body: Callable[[], Coroutine[Any, Any, Any]], wait: float = 30.0) -> Any:
    """Run ``asyncio.run(body())`` in a child forked from inside the running test (as a
    ``multiprocessing`` process started by async code is); its result, or fail with its error.
    """
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()

    def target() -> None:
        try:
            out.put(("ok", asyncio.run(body())))
        except BaseException as exc:  # report anything, never leave the parent waiting
            out.put(("error", repr(exc)))

    p = ctx.Process(target=target)
    p.start()
    try:
        status, value = out.get(timeout=wait)
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    assert status == "ok", value
    return value


def _ports(conns: Iterable[Any]) -> set[int]:
    """Local ports of the connected ones among ``conns`` (unique among open sockets)."""
    return {int(c._writer.get_extra_info("sockname")[1]) for c in conns if c.is_connected}


async def test_a_forked_child_never_uses_nor_closes_the_parents_connections(
    redis_server: RedisServer, prefix: str
) -> None:
    # The parent forks from inside its running event loop (as async code starting a
    # multiprocessing process does) while the store keeps connections of its own. The child
    # decides on connections of its own, then collects its garbage: redis-py's finalizer
    # closes a connection it collects, and closing one of the parent's in the child
    # unregisters its socket from the parent's epoll set (shared across fork()): the parent's
    # next calls on it would time out. Each of the parent's connections must still work.
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    wire = store._wire
    assert wire is not None
    assert wire.keep
    try:
        first = await asyncio.gather(
            *[store.window_acquire(LIMITS, "", (1,), -1) for _ in range(4)]
        )
        assert all(d.allowed for d in first)
        parents = _ports(wire._idle)
        assert len(parents) >= 2

        async def child() -> tuple[bool, int, set[int]]:
            d = await store.window_acquire(LIMITS, "", (1,), -1)
            gc.collect()
            return d.allowed, d.remaining, _ports(wire._idle)

        allowed, remaining, used = _in_forked_child(child)
        assert allowed
        assert remaining == 100 - 5  # the child's decision counts in the shared window
        assert used
        assert not used & parents  # connections of its own

        n = len(parents)  # a call on each of the parent's connections
        after = await asyncio.gather(
            *[store.window_acquire(LIMITS, "", (1,), -1) for _ in range(n)]
        )
        assert sorted(d.remaining for d in after) == list(range(95 - n, 95))
        assert _ports(wire._idle) == parents
        assert not health_of(store).degraded
    finally:
        await store.aclose()


async def test_a_forked_child_closing_the_store_leaves_the_parents_client_working(
    redis_server: RedisServer, prefix: str
) -> None:
    # redis-py's asyncio pool has no fork check: in the child, the application's commands
    # would take the parent's pooled connection (and fail reading it through the parent's
    # event loop), and closing the store (so the client and its pool) would close it under
    # the parent.
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    assert store._wire is not None
    pool = store._wire.pool
    try:
        assert (await store.window_acquire(LIMITS, "", (1,), -1)).allowed
        await store.client.set(f"{prefix}:app", 1)
        parents = _ports(pool._available_connections)
        assert len(parents) == 1

        async def child() -> tuple[bool, set[int]]:
            d = await store.window_acquire(LIMITS, "", (1,), -1)
            app = await store.client.get(f"{prefix}:app")
            used = _ports(pool._available_connections)
            await store.aclose()
            gc.collect()
            return d.allowed and app == b"1", used

        ok, used = _in_forked_child(child)
        assert ok
        assert used
        assert not used & parents

        assert await asyncio.wait_for(store.client.get(f"{prefix}:app"), 5) == b"1"
        assert _ports(pool._available_connections) == parents
        assert (await store.window_acquire(LIMITS, "", (1,), -1)).remaining == 100 - 3
        assert not health_of(store).degraded
    finally:
        await store.aclose()


async def test_a_child_forked_while_every_slot_is_taken_still_gets_slots(
    redis_server: RedisServer, prefix: str
) -> None:
    # max_concurrency=1 and the parent's one slot is taken by a call in flight at the fork:
    # that call never ends in the child, so on the parent's gate the child would queue
    # forever.
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=10.0, max_connections=1)
    gate = store._gate
    assert gate is not None
    try:
        assert (await store.window_acquire(LIMITS, "", (1,), -1)).allowed
        call = asyncio.ensure_future(store.window_acquire(LIMITS, "", (1,), -1))
        for _ in range(20):  # until the call holds the slot (a few loop iterations)
            if gate.free == 0:
                break
            await asyncio.sleep(0)
        assert gate.free == 0

        async def child() -> bool:
            d = await asyncio.wait_for(store.window_acquire(LIMITS, "", (1,), -1), 5)
            return d.allowed

        assert _in_forked_child(child, wait=15)
        assert (await call).allowed
        assert (await store.window_acquire(LIMITS, "", (1,), -1)).remaining == 100 - 4
    finally:
        await store.aclose()


async def test_a_forked_child_never_borrows_the_parents_pooled_connections(
    redis_server: RedisServer, prefix: str
) -> None:
    # Without a bound (a BlockingConnectionPool) the store borrows from the client's pool,
    # which redis-py's asyncio client does not renew after fork(): the child would write on
    # the parent's sockets (its replies then reach the parent's readers) and read through the
    # parent's event loop.
    pool = aioredis.BlockingConnectionPool.from_url(redis_server.url, max_connections=4)
    client = aioredis.Redis(connection_pool=pool)
    store = RedisStore(client, prefix=prefix, timeout=2.0)
    assert store._wire is not None
    assert not store._wire.keep
    try:
        first = await asyncio.gather(
            *[store.window_acquire(LIMITS, "", (1,), -1) for _ in range(3)]
        )
        assert all(d.allowed for d in first)
        parents = _ports(pool._available_connections)
        assert parents

        async def child() -> tuple[bool, int, set[int]]:
            d = await store.window_acquire(LIMITS, "", (1,), -1)
            used = _ports(pool._available_connections)
            await store.aclose()
            await pool.disconnect()
            gc.collect()
            return d.allowed, d.remaining, used

        allowed, remaining, used = _in_forked_child(child)
        assert allowed
        assert remaining == 100 - 4
        assert used
        assert not used & parents

        n = len(pool._available_connections)
        after = await asyncio.gather(
            *[store.window_acquire(LIMITS, "", (1,), -1) for _ in range(n)]
        )
        assert sorted(d.remaining for d in after) == list(range(96 - n, 96))
        assert _ports(pool._available_connections) == parents
        assert not health_of(store).degraded
    finally:
        await client.aclose()
        await pool.disconnect()
