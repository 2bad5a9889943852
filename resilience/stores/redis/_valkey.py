"""Valkey: its URLs and its Python client, served by redis-py.

Valkey speaks the Redis protocol, and the store drives redis-py's connections, exceptions and
pub/sub directly (``_wire.py``, ``_errors.py``, ``_pubsub.py``). So Valkey gets no code path of
its own: a ``valkey://`` URL is a ``redis://`` URL to redis-py (:func:`redis_url`), and a
``valkey.asyncio`` client handed to :class:`resilience.RedisStore` is read for its settings
(address, database, credentials, TLS, timeouts, decoding, pool size) and replaced by an
equivalent redis-py client (:func:`from_valkey`) that the store owns and closes; the caller's
client is left alone. The ``valkey`` package is never imported: its clients are recognised by
their module's name and read by attribute.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry

__all__ = ["VALKEY_SCHEMES", "from_valkey", "is_valkey_client", "redis_url", "valkey_label"]

#: URL schemes of Valkey and the redis-py scheme each stands for.
VALKEY_SCHEMES = {
    "valkey": "redis",
    "valkeys": "rediss",
    "valkey+sentinel": "redis+sentinel",
    "valkeys+sentinel": "rediss+sentinel",
}

# Settings carried over to the redis-py client when the valkey client has them set (not None).
_CARRIED = (
    "host",
    "port",
    "path",
    "db",
    "username",
    "password",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
    "encoding",
    "encoding_errors",
    "decode_responses",
    "health_check_interval",
    "client_name",
    "protocol",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_min_version",
    "ssl_ciphers",
)
# Settings that would run valkey code inside redis-py's connection: refused, not dropped.
_REFUSED = ("credential_provider", "valkey_connect_func", "redis_connect_func")
_CONNECTIONS = {
    "Connection": aioredis.Connection,
    "SSLConnection": aioredis.SSLConnection,
    "UnixDomainSocketConnection": aioredis.UnixDomainSocketConnection,
}
_HINT = "build a redis.asyncio client with the same settings and pass it instead"


def redis_url(url: str) -> tuple[str, bool]:
    """``url`` with a Valkey scheme (``valkey://``, ``valkeys://``, ``valkey+sentinel://``)
    replaced by its redis-py equivalent, and whether it had one."""
    scheme, sep, rest = url.partition("://")
    target = VALKEY_SCHEMES.get(scheme.lower()) if sep else None
    if target is None:
        return url, False
    return f"{target}://{rest}", True


def valkey_label(label: str) -> str:
    """A store's label (``redis://host:port/db``, ``redis-cluster://``, ``redis+sentinel://``)
    as it reads for a Valkey server."""
    return "valkey" + label[len("redis") :] if label.startswith("redis") else label


def is_valkey_client(client: object) -> bool:
    """Whether ``client`` comes from the ``valkey`` package (by its class's module name)."""
    module = type(client).__module__
    return module == "valkey" or module.startswith("valkey.")


def from_valkey(client: Any) -> aioredis.Redis | RedisCluster:
    """A redis-py client with the settings of ``client``, a ``valkey.asyncio.Valkey`` or
    ``valkey.asyncio.ValkeyCluster`` (see the module docs).

    Carried over: address (host and port, or a Unix socket), database, user and password,
    TLS settings, timeouts, keepalive, decoding, client name, protocol, the pool's size (and a
    ``BlockingConnectionPool`` stays one), a single-connection client, and the retry policy's
    backoff and count (retrying redis-py's connection errors). Raises :class:`TypeError`
    naming what cannot be carried: a synchronous client, a Sentinel-managed or custom
    connection class, a ``credential_provider`` or a connect callback.
    """
    module = type(client).__module__
    name = type(client).__name__
    if module.startswith("valkey.asyncio.cluster") and name == "ValkeyCluster":
        return _cluster(client)
    if not (module.startswith("valkey.asyncio") and hasattr(client, "connection_pool")):
        raise TypeError(
            f"client must be a redis.asyncio or valkey.asyncio client, got {module}.{name} "
            "(the store is asyncio: use valkey.asyncio.Valkey, not valkey.Valkey)"
        )
    pool = client.connection_pool
    conn_cls = pool.connection_class
    target = _CONNECTIONS.get(conn_cls.__name__)
    if target is None or not conn_cls.__module__.startswith("valkey."):
        raise TypeError(
            f"client: cannot carry connection class {conn_cls.__module__}.{conn_cls.__name__} "
            "of this valkey client over to redis-py (for Sentinel use "
            f"RedisStore.from_url('valkey+sentinel://...') or from_sentinel); {_HINT}"
        )
    kwargs = _settings(pool.connection_kwargs)
    blocking = type(pool).__name__ == "BlockingConnectionPool"
    pool_cls = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
    if blocking:
        kwargs["timeout"] = pool.timeout
    new_pool = pool_cls(connection_class=target, max_connections=pool.max_connections, **kwargs)
    single = bool(getattr(client, "single_connection_client", False))
    redis_client = aioredis.Redis(connection_pool=new_pool, single_connection_client=single)
    redis_client.auto_close_connection_pool = True  # the pool is ours: aclose() closes it
    return redis_client


def _cluster(client: Any) -> RedisCluster:
    nodes = client.nodes_manager
    kw = dict(nodes.connection_kwargs)
    conn_cls = kw.get("connection_class")
    ssl = conn_cls is not None and conn_cls.__name__ == "SSLConnection"
    if conn_cls is not None and conn_cls.__name__ not in ("Connection", "SSLConnection"):
        raise TypeError(
            f"client: cannot carry connection class {conn_cls.__name__} of this valkey "
            f"cluster client over to redis-py; {_HINT}"
        )
    kwargs = _settings(kw)
    kwargs.pop("db", None)  # a cluster has database 0 only
    startup = [ClusterNode(n.host, n.port) for n in nodes.startup_nodes.values()]
    return RedisCluster(
        startup_nodes=startup,
        max_connections=int(kw.get("max_connections") or 2**31),
        ssl=ssl,
        **kwargs,
    )


def _settings(kw: dict[str, Any]) -> dict[str, Any]:
    for key in _REFUSED:
        if kw.get(key) is not None:
            raise TypeError(f"client: the valkey client's {key} cannot be carried over; {_HINT}")
    out = {k: kw[k] for k in _CARRIED if kw.get(k) is not None}
    retry = kw.get("retry")
    if retry is not None:
        try:
            out["retry"] = Retry(retry._backoff, retry._retries)
        except AttributeError:
            raise TypeError(
                f"client: the valkey client's retry policy cannot be carried over; {_HINT}"
            ) from None
    return out
