"""Redis Sentinel: a client that always talks to the current master of a service.

Every decision of the store is a write (a Lua script that adds to a log), so every operation
goes to the master, never to a replica (a replica would also be stale: limits' Sentinel
storage reads replicas by default, see research notes §1.9). After a failover the client asks
the sentinels for the new master on its next connection; calls in between fail with
:class:`resilience.StoreUnavailable` and the policies' fallback decides.

URL form: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``.
The credentials, if any, are the data node's (``sentinel_kwargs`` configures the sentinels'
own connections).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

__all__ = ["SENTINEL_SCHEMES", "parse_sentinel_url", "sentinel_client"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``(sentinels, service, client kwargs)`` of a ``redis+sentinel://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"url must start with one of {SENTINEL_SCHEMES}")
    netloc = parts.netloc
    kwargs: dict[str, Any] = {}
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, _, password = cred.partition(":")
        if user:
            kwargs["username"] = unquote(user)
        if password:
            kwargs["password"] = unquote(password)
    sentinels: list[tuple[str, int]] = []
    for hp in netloc.split(","):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("url must list sentinels as host:port[,host:port...]")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("url must name the Sentinel service: redis+sentinel://hosts/service")
    service = unquote(path[0])
    if len(path) > 1:
        if not path[1].isdigit():
            raise ValueError("url: the database after the service must be an integer")
        kwargs["db"] = int(path[1])
    if parts.scheme == "rediss+sentinel":
        kwargs["ssl"] = True
    return sentinels, service, kwargs


def sentinel_client(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    *,
    timeout: float,
    sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` bound to the master of ``service`` (via ``master_for``)."""
    kwargs.setdefault("socket_timeout", timeout)
    kwargs.setdefault("socket_connect_timeout", timeout)
    sk = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sk.update(sentinel_kwargs or {})
    sentinel = Sentinel(list(sentinels), sentinel_kwargs=sk, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    client: aioredis.Redis = sentinel.master_for(service)
    return client
