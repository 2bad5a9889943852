"""The Redis store: shared state for a whole fleet, decided atomically in Lua on Redis's clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from resilience.stores.redis._breaker import RedisBreaker
from resilience.stores.redis._budget import RedisBudget
from resilience.stores.redis._concurrency import RedisConcurrency
from resilience.stores.redis._keys import check_prefix
from resilience.stores.redis._presence import RedisPresence
from resilience.stores.redis._registry import RedisRegistry
from resilience.stores.redis._sentinel import (
    SENTINEL_SCHEMES,
    parse_sentinel_url,
    sentinel_client,
)
from resilience.stores.redis._valkey import (
    from_valkey,
    is_valkey_client,
    redis_url,
    valkey_label,
)
from resilience.stores.redis._window import RedisWindow

__all__ = ["RedisStore"]

#: Default per-operation timeout of stores built by :meth:`RedisStore.from_url` (seconds).
DEFAULT_TIMEOUT = 0.5
#: Default size of the connection pool of stores built by :meth:`RedisStore.from_url`.
DEFAULT_MAX_CONNECTIONS = 64


class RedisStore(
    RedisWindow, RedisBreaker, RedisBudget, RedisPresence, RedisConcurrency, RedisRegistry
):
    """Policies' shared state in Redis (standalone or Cluster), one Lua script per decision.

    Every decision is one ``EVALSHA`` of a script that reads Redis ``TIME``: worker clocks never
    matter. Keys are formed as described in :mod:`resilience.stores.redis._keys` (and in
    ``docs/redis.md``); all keys of one decision share a hash tag, so the store works unchanged
    on Redis Cluster.

    Valkey (>= 7.2) is served the same way: see ``docs/redis.md``.

    Args:
        client: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``; or a
            ``valkey.asyncio.Valkey`` or ``ValkeyCluster``, whose settings (address, database,
            credentials, TLS, timeouts, decoding, pool size, retry backoff) are carried over to
            a redis-py client that the store owns and closes (your valkey client is left
            alone; settings that cannot be carried over raise ``TypeError``, see
            :func:`resilience.stores.redis._valkey.from_valkey`).
        prefix: the first segment of every key: a non-empty str of text (no lone surrogate)
            without braces; anything else fails here, naming ``prefix``.
        timeout: the longest one store call may take, in seconds (the wait for a connection
            slot included); past it the call fails with :class:`resilience.StoreUnavailable` (see
            :mod:`resilience.stores.redis._health`). Default: the client's ``socket_timeout`` if it
            has one, else 0.5 s.
        max_concurrency: at most this many commands in flight from this store; further calls
            queue. Default: the client's pool size when its pool would *fail* instead of
            queueing (redis-py's default ``ConnectionPool`` raises "Too many connections";
            a ``RedisCluster`` node's pool raises ``MaxConnectionsError``), otherwise
            unbounded (a ``BlockingConnectionPool`` queues by itself). With a bound and a
            standalone client, the store sends on up to that many connections of its own,
            made with the client's settings, so the application's commands on the same
            client never find its pool exhausted by the store (see
            :mod:`resilience.stores.redis._wire`).

    Failures (connection refused, timeout, failover in progress) raise
    :class:`resilience.StoreUnavailable`, reply errors that are not about availability
    (``WRONGTYPE``, ``NOPERM``, a script error) :class:`resilience.StoreError`; no ``redis``
    exception type reaches the caller (the contract of :mod:`resilience.stores.base`).
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster | Any,
        *,
        prefix: str = "resilience",
        max_concurrency: int | None = None,
        timeout: float | None = None,
    ) -> None:
        check_prefix(prefix)
        valkey = is_valkey_client(client)
        if valkey:
            client = from_valkey(client)
        if max_concurrency is None:
            if isinstance(client, RedisCluster):
                # Each node's pool raises MaxConnectionsError when full, and a hot key lives on
                # one node: never have more commands in flight than one node's pool holds.
                kw = client.nodes_manager.connection_kwargs
                max_concurrency = int(kw.get("max_connections") or 100)
            else:
                pool = client.connection_pool
                if not isinstance(pool, aioredis.BlockingConnectionPool):
                    max_concurrency = pool.max_connections
        super().__init__(client, prefix=prefix, max_concurrency=max_concurrency, timeout=timeout)
        if valkey:
            self.label = valkey_label(self.label)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "resilience",
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        cluster: bool = False,
        **kwargs: Any,
    ) -> RedisStore:
        """Build a store and its client from a URL (``redis://``, ``rediss://``, ``unix://``,
        ``redis+sentinel://``; for Valkey ``valkey://``, ``valkeys://``, ``valkey+sentinel://``,
        served by redis-py like their ``redis`` twins).

        Every store call is bounded by ``timeout`` seconds (the store's own watchdog, see
        :mod:`resilience.stores.redis._health`; connecting is bounded by
        ``socket_connect_timeout`` = ``timeout``). At most ``max_connections`` commands are in
        flight: a larger burst of callers queues for a connection on the store instead of
        failing with redis-py's "Too many connections" (that wait is part of the timeout: past
        it, the policy's fallback decides). The client is left without a per-read
        ``socket_timeout`` (redis-py 8 defaults to 5 s): the watchdog already bounds the whole
        call, more cheaply than redis-py's per-read timers (a task per send on Python 3.11).
        ``cluster=True`` builds a ``RedisCluster`` from the URL's node. Other keyword
        arguments go to the client.
        """
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        _check_max_connections(max_connections)
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        url, valkey = redis_url(url)
        store = cls._from_redis_url(url, prefix, timeout, max_connections, cluster, kwargs)
        if valkey:
            store.label = valkey_label(store.label)
        return store

    @classmethod
    def _from_redis_url(
        cls,
        url: str,
        prefix: str,
        timeout: float,
        max_connections: int,
        cluster: bool,
        kwargs: dict[str, Any],
    ) -> RedisStore:
        if url.startswith(SENTINEL_SCHEMES):  # redis+sentinel://
            sentinels, service, url_kwargs = parse_sentinel_url(url)
            return cls.from_sentinel(
                sentinels,
                service,
                prefix=prefix,
                timeout=timeout,
                max_connections=max_connections,
                **{**url_kwargs, **kwargs},
            )
        kwargs.setdefault("socket_connect_timeout", timeout)
        # redis-py 8 defaults to a 5 s per-read timeout: each send then runs in a task of its
        # own (``asyncio.wait_for``) and each read under a timer. The watchdog bounds the call.
        kwargs.setdefault("socket_timeout", None)
        if cluster:
            client: aioredis.Redis | RedisCluster = RedisCluster.from_url(
                url, max_connections=max_connections, **kwargs
            )
            return cls(client, prefix=prefix, timeout=timeout)
        pool = aioredis.ConnectionPool.from_url(url, max_connections=max_connections, **kwargs)
        return cls(
            aioredis.Redis.from_pool(pool),
            prefix=prefix,
            max_concurrency=max_connections,
            timeout=timeout,
        )

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        prefix: str = "resilience",
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        sentinel_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> RedisStore:
        """Build a store on the master of ``service_name``, found through ``sentinels``.

        Every operation goes to the current master (after a failover, to the new one); see
        :mod:`resilience.stores.redis._sentinel`. ``from_url`` accepts the same as
        ``redis+sentinel://host:port[,host:port]/service[/db]``. ``timeout`` bounds each call
        and each sentinel query; at most ``max_connections`` commands are in flight.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        _check_max_connections(max_connections)
        client = sentinel_client(
            sentinels,
            service_name,
            timeout=timeout,
            sentinel_kwargs=sentinel_kwargs,
            max_connections=max_connections,
            **kwargs,
        )
        store = cls(client, prefix=prefix, max_concurrency=max_connections, timeout=timeout)
        store.label = f"redis+sentinel://{service_name}"
        # The clients of the sentinels themselves, made here: aclose() closes them too.
        pool: Any = client.connection_pool  # redis-py's SentinelConnectionPool
        store._owned.extend(pool.sentinel_manager.sentinels)
        return store


def _check_max_connections(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            "max_connections must be a positive int (a count of connections), "
            f"got {type(value).__name__} {value!r}"
        )
    if value <= 0:
        raise ValueError(f"max_connections must be a positive int, got {value!r}")
