"""Which redis-py failures are outages, which are reply errors, and what a message may show.

The Redis store keeps the protocol's error contract (:mod:`resilience.stores.base`): an outage
(a timeout, a refused or reset connection, a server loading, read-only or failing over) becomes
:class:`resilience.StoreUnavailable`, and degrades the store (``_health.py``); a reply error
that says nothing about availability (``WRONGTYPE``, ``NOPERM``, a script error) becomes
:class:`resilience.StoreError`. Messages and labels never show credentials (:func:`redact`,
:func:`client_label`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resilience.errors import StoreError

# redis-py >= 5.1 only (5.0 raises a plain ClusterError there, already an outage).
_UNREACHABLE: tuple[type[BaseException], ...] = tuple(
    t
    for t in (getattr(redis.exceptions, "RedisClusterUnreachableError", None),)
    if isinstance(t, type)
)

__all__ = [
    "CLIENT_ERRORS",
    "DEFAULT_BOUND",
    "client_label",
    "client_secrets",
    "client_timeout",
    "is_outage",
    "is_reply_error",
    "redact",
    "reply_error",
]

# ConnectionError covers BusyLoadingError, AuthenticationError and Sentinel's
# MasterNotFoundError; ClusterError covers ClusterDownError and the MOVED/ASK storms. The
# cluster client raises two more that are not RedisErrors: no node reachable, and a slot no
# node serves (a failover in progress).
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    *_UNREACHABLE,
    SlotNotCoveredError,
    OSError,
    asyncio.TimeoutError,
)
_OUTAGE_PREFIXES = (
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "OOM",
    "MISCONF",  # writes refused: the last RDB save failed
    "NOREPLICAS",  # writes refused: min-replicas-to-write not met
)
# Redis < 7 wraps an error raised by redis.call inside a script: "ERR Error running script
# (call to f_...): @user_script:12: -OOM command not allowed ...".
_EMBEDDED_OUTAGE = re.compile(r"-(?:" + "|".join(_OUTAGE_PREFIXES) + r")\b")

#: Every exception a redis-py call may raise about Redis or the connection (the cluster
#: client's own exceptions are not ``RedisError``\ s).
CLIENT_ERRORS = (RedisError, RedisClusterException)

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with URL credentials (``scheme://user:pass@``) and each of ``secrets`` masked."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***")
    return text


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (a redis-py or socket error) means "Redis cannot decide right now"."""
    if isinstance(exc, _OUTAGE_TYPES):
        return True
    if isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc):
        return True  # no node reachable: redis-py < 5.1's form of RedisClusterUnreachableError
    if isinstance(exc, ResponseError):
        text = str(exc).upper()
        return text.startswith(_OUTAGE_PREFIXES) or _EMBEDDED_OUTAGE.search(text) is not None
    return False


def is_reply_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing the command for a reason that is not availability
    (``WRONGTYPE``, ``NOPERM``, a script error...): a misconfiguration or a bug, which the
    store raises as :class:`resilience.StoreError` instead of falling back. Cluster
    redirections (``MOVED``/``ASK`` that redis-py could not follow) are not: the topology is
    changing, and the fallback decides meanwhile. Neither are the cluster client's own
    outages (no node reachable, a slot not covered); its other refusals are (a command it
    cannot route: a bug)."""
    if isinstance(exc, RedisClusterException):
        return not is_outage(exc)
    return isinstance(exc, ResponseError) and not isinstance(exc, AskError) and not is_outage(exc)


def reply_error(
    label: str,
    prefix: str,
    script: str,
    keys: Sequence[str],
    exc: RedisError | RedisClusterException,
    secrets: tuple[str, ...],
) -> StoreError:
    """:class:`StoreError` for reply error ``exc`` of ``script`` on ``keys`` in store
    ``label``, saying what is wrong (credentials masked)."""
    text = str(exc)
    head = text.split(None, 1)[0].upper() if text else ""
    where = ", ".join(repr(k) for k in keys)
    if head == "WRONGTYPE":
        msg = (
            f"store {label}: a key of this decision holds a value of another type "
            f"(keys {where}; written by something else under prefix {prefix!r}?): "
            "delete the key or give the store a prefix of its own"
        )
    elif head == "NOPERM" or isinstance(exc, NoPermissionError):
        msg = (
            f"store {label}: NOPERM: the Redis user lacks a permission the store needs "
            f"(EVALSHA and EVAL of its scripts, on keys {where}): grant it with ACL SETUSER"
        )
    elif isinstance(exc, RedisClusterException):
        msg = f"store {label}: the cluster client refused script {script!r} on keys {where}"
    else:
        msg = f"store {label}: Redis refused script {script!r} on keys {where}"
    return StoreError(redact(f"{msg} ({type(exc).__name__}: {text})", secrets))


#: The bound used when the client has no ``socket_timeout`` (seconds).
DEFAULT_BOUND = 0.5


def _connection_kwargs(client: Any) -> dict[str, Any]:
    try:
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            return dict(pool.connection_kwargs)
        nm = getattr(client, "nodes_manager", None)
        if nm is not None:
            return dict(nm.connection_kwargs)
    except Exception:  # pragma: no cover - defensive
        pass
    return {}


def client_timeout(client: Any) -> float:
    """The bound on one store call: the client's ``socket_timeout``, else :data:`DEFAULT_BOUND`."""
    t = _connection_kwargs(client).get("socket_timeout")
    if isinstance(t, (int, float)) and t > 0:
        return float(t)
    return DEFAULT_BOUND


def client_secrets(client: Any) -> tuple[str, ...]:
    """The client's password and user name, to be masked in messages."""
    kw = _connection_kwargs(client)
    out = []
    for k in ("password", "username"):
        v = kw.get(k)
        if isinstance(v, str) and v:
            out.append(v)
    return tuple(out)


def client_label(client: Any) -> str:
    """``redis://host:port/db`` of a client, never with credentials."""
    try:
        if isinstance(client, RedisCluster):
            # Before the first command only the startup nodes are known.
            nodes = client.get_nodes() or list(client.nodes_manager.startup_nodes.values())
            first = nodes[0].name if nodes else "?"
            return f"redis-cluster://{first}"
        kw = client.connection_pool.connection_kwargs
        if "path" in kw:
            return f"unix://{kw['path']}"
        return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
    except Exception:  # pragma: no cover - purely cosmetic
        return "redis"
