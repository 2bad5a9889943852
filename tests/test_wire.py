"""The Redis store's command path (``resilience/stores/redis/_wire.py``) against real servers."""

from __future__ import annotations

import asyncio
import multiprocessing
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
    await client.aclose()
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


def _child(conn_ids: list[int], out: Any) -> None:
    async def main() -> tuple[bool, bool]:
        d = await _STORE[0].window_acquire(_LIM[0]._limits, "", (1,), -1)
        wire = _STORE[0]._wire
        fresh = all(id(c) not in conn_ids for c in wire._idle)
        return d.allowed, fresh

    out.put(asyncio.run(main()))


_STORE: list[Any] = []
_LIM: list[Any] = []


async def test_a_forked_child_never_uses_the_parents_connections(
    redis_server: RedisServer, prefix: str
) -> None:
    ctx = multiprocessing.get_context("fork")
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    lim = SlidingWindowLimiter(100, 10.0, store=store, name="fork", guard=0)
    await lim.try_acquire()
    assert store._wire is not None
    parent_conns = [id(c) for c in store._wire._idle]
    assert parent_conns
    _STORE[:] = [store]
    _LIM[:] = [lim]
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(parent_conns, out))
    p.start()
    allowed, fresh = out.get(timeout=30)
    p.join(10)
    assert allowed
    assert fresh
    assert (await lim.try_acquire()).remaining == 100 - 3  # the parent's connection still works
    await store.aclose()
