"""The store's command path: redis-py's connections, without the client's per-command machinery.

A decision of the Redis store is one ``EVALSHA``, so the cost of sending one command is the
store's cost. redis-py 8's ``Redis.execute_command`` does much more per command than write it
and read the reply: a pool lock to take a connection and another to return it, observability
hooks (two more awaits), a retry closure, an event dispatch. Measured on loopback, that
machinery costs about as much client time as everything else in the round trip: with 16 or more
concurrent callers, sending ``EVALSHA`` the way below runs about 1.7 times as many commands per
second as ``client.evalsha`` (``benchmarks/limiter.py``, ``docs/benchmarks.md``).

So :class:`Wire` sends on a redis-py connection directly, and leaves every protocol detail to
redis-py:

- The connection writes the command and ``read_response`` parses the reply (decoded or not, as
  the client is set up); a ``-NOSCRIPT`` reply raises redis-py's ``NoScriptError`` as before.
  The one thing done here is framing the hot command, ``EVALSHA``: its head (script and keys)
  is packed once and kept, and the few arguments of each call (ints and ASCII tokens) are
  framed as bulk strings; that takes a fifth of the time of redis-py's general
  ``pack_command``, which packs every other command.
- redis-py disconnects a connection whose reply was not read (an error, a cancellation in
  flight, our watchdog's deadline), and reconnects it on its next use: no reply is ever
  delivered to the wrong caller.
- Connections: when the store bounds its concurrency (``max_concurrency``, the default for
  ``RedisStore.from_url``, ``from_sentinel`` and clients with redis-py's default pool), it
  keeps connections of its own on a stack, made by the client's pool (``make_connection``:
  same address, credentials, TLS, Sentinel master lookup) but not counted in it, so the
  application's own commands on the client never find the pool exhausted by the store.
  There are never more than ``max_concurrency`` of them, since that many calls at most are
  in flight. A connection whose class picks its address as it connects (Sentinel's asks the
  sentinels for the current master) is connected through its own ``connect()``. Without a
  bound (a ``BlockingConnectionPool``, which queues by itself) every call takes a connection
  from the client's pool and gives it back, as redis-py does.
- A connection-level failure (``ConnectionError``, ``TimeoutError``, ``OSError``: a stale
  connection after a server restart, a failover, an idle timeout) returns the connection to
  the pool and repeats the command once through ``client.execute_command``, that is, under
  the client's own retry policy, exactly as if the store had used the client from the start.
  A failure there is the store's failure (see :mod:`resilience.stores.redis._health`).
- After ``fork()`` the child never uses, nor closes, the parent's connections: neither the
  wire's own nor those of the client's pool (redis-py's asyncio pool, unlike its synchronous
  one, has no fork check). They are set aside as the child starts and stay referenced until it
  exits: closing one in the child, even by letting redis-py's finalizer close it as it is
  garbage collected, unregisters its socket from the event loop the parent was running,
  whose epoll set the child shares with the parent, and the parent's loop would never again
  be woken by that socket's replies (its calls on it would time out).

``RedisCluster`` clients and single-connection clients keep the client's own path (no
:class:`Wire`): the cluster routes each command to a node and follows redirections. Neither do
the store's commands pass through ``execute_command`` hooks (an instrumentation that patches
it sees no ``EVALSHA`` from the store; the store's own telemetry reports its decisions).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import weakref
from collections.abc import Coroutine, Sequence
from typing import Any, TypeGuard

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resilience._deadline import fired

__all__ = ["Wire"]

_HEADS_MAX = 10_000  # packed command heads kept per wire (script and keys)

_CONNECTION_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)

_wires: weakref.WeakSet[Wire] = weakref.WeakSet()  # every live wire, for _set_aside_after_fork
_inherited: list[object] = []  # the parent's connections, in a forked child (never closed)


def _set_aside_after_fork() -> None:
    """In a child, right after ``fork()``: empty every wire's stack of connections and its
    client's pool, keeping their connections referenced in ``_inherited`` (see the module
    docs). Plain list operations only: nothing here may block or call into redis-py."""
    for wire in list(_wires):
        # The list itself: a call in flight at the fork would put its connection back there.
        _inherited.append(wire._idle)
        wire._idle = []
        for name in ("_available_connections", "_in_use_connections"):  # redis-py's pools
            conns = getattr(wire.pool, name, None)
            if conns:
                _inherited.extend(conns)
                conns.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_set_aside_after_fork)


class Wire:
    """Send commands on redis-py connections of ``client``'s pool (see the module docs).

    Args:
        client: a standalone ``redis.asyncio.Redis`` (not single-connection).
        keep: keep connections of the wire's own (the caller bounds how many commands are in
            flight); otherwise take each from the client's pool and return it.
    """

    __slots__ = (
        "__weakref__",
        "_conn_args",
        "_connect_first",
        "_encoding",
        "_errors",
        "_heads",
        "_idle",
        "client",
        "keep",
        "pool",
    )

    def __init__(self, client: aioredis.Redis, *, keep: bool = False) -> None:
        self.client = client
        self.pool = client.connection_pool
        self.keep = keep
        self._idle: list[AbstractConnection] = []
        kwargs = self.pool.connection_kwargs
        self._encoding: str = kwargs.get("encoding", "utf-8")
        self._errors: str = kwargs.get("encoding_errors", "strict")
        self._heads: dict[tuple[str, ...], bytes] = {}
        # redis-py < 5.3 requires a command name (ignored by the pool); later versions
        # deprecate passing one.
        self._conn_args: tuple[str, ...] = (
            ("EVALSHA",) if _needs_command_name(self.pool.get_connection) else ()
        )
        # A connection class that chooses its address as it connects (Sentinel's asks the
        # sentinels for the current master) must connect through its own ``connect()``:
        # redis-py 8's ``send_packed_command`` connects an unconnected connection through
        # ``connect_check_health``, which skips that override and dials the connection's
        # default address (localhost:6379) or the master it knew before a failover.
        self._connect_first = (
            getattr(self.pool.connection_class, "connect", None) is not AbstractConnection.connect
        )
        _wires.add(self)

    @staticmethod
    def supports(client: object) -> TypeGuard[aioredis.Redis]:
        """Whether ``client`` can be driven this way (a standalone, pooled ``Redis``)."""
        return isinstance(client, aioredis.Redis) and not client.single_connection_client

    def evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        entry: list[Any] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """``EVALSHA sha len(keys) *keys *args``; its reply (a plain function returning the
        round trip's coroutine: no extra coroutine frame on the hot path)."""
        return self._roundtrip(
            self.pack_evalsha(sha, keys, args), "EVALSHA", sha, keys, args, entry
        )

    def eval(
        self,
        source: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        entry: list[Any] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """``EVAL source len(keys) *keys *args`` (packed by redis-py); its reply."""
        return self._roundtrip(None, "EVAL", source, keys, args, entry)

    def pack_evalsha(self, sha: str, keys: Sequence[str], args: Sequence[int | str]) -> bytes:
        """``EVALSHA sha len(keys) *keys *args`` in the protocol, ready to write.

        The same bytes as redis-py's ``pack_command`` (tested), built faster: the part up to
        the last key is packed once per script and keys and kept; the arguments (ints and
        ASCII tokens, a few per call) are framed directly.
        """
        enc, errors = self._encoding, self._errors
        head_key = (sha, *keys)
        head = self._heads.get(head_key)
        if head is None:
            if len(self._heads) >= _HEADS_MAX:
                self._heads.clear()
            head = self._heads[head_key] = b"".join(
                [_bulk(b"EVALSHA"), _bulk(sha.encode(enc, errors)), _bulk(b"%d" % len(keys))]
                + [_bulk(k.encode(enc, errors)) for k in keys]
            )
        out = [b"*%d\r\n" % (3 + len(keys) + len(args)), head]
        for a in args:
            b = b"%d" % a if type(a) is int else a.encode(enc, errors)  # type: ignore[union-attr]
            out.append(b"$%d\r\n%b\r\n" % (len(b), b))
        return b"".join(out)

    async def _roundtrip(
        self,
        packed: bytes | None,
        verb: str,
        script: str,
        keys: Sequence[str],
        args: Sequence[int | str],
        entry: list[Any] | None = None,
    ) -> Any:
        """Send ``verb script len(keys) *keys *args`` (``packed``, or packed here by redis-py)
        and return the reply; ``entry``: the call's deadline (see ``_deadline.arm``)."""
        idle = self._idle
        pool = self.pool
        keep = self.keep
        if idle:
            conn = idle.pop()
        else:
            conn = (
                pool.make_connection()  # type: ignore[no-untyped-call]
                if keep
                else await pool.get_connection(*self._conn_args)  # type: ignore[no-untyped-call]
            )
        try:
            if self._connect_first and not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call,unused-ignore]
            data: bytes | list[bytes] = (
                conn.pack_command(verb, script, len(keys), *keys, *args)
                if packed is None
                else packed
            )
            await conn.send_packed_command(data, check_health=False)
            return await conn.read_response()
        except _CONNECTION_FAILURES:
            pass  # redis-py has disconnected `conn`; the command is repeated below
        finally:
            # A reply error (NOSCRIPT...) leaves the connection clean; a failure or a
            # cancellation in flight has made redis-py disconnect it (it reconnects on its
            # next use). Either way it can be used again.
            if not keep:
                await pool.release(conn)
            elif idle is self._idle:
                idle.append(conn)
            else:  # aclose() ran while this call was in flight: the connection is closed here
                await conn.disconnect()
        # A connection-level failure: once more, under the client's own retry policy; but not
        # once the call's deadline has fired: then this "failure" is our cancellation, turned
        # into a TimeoutError by redis-py (5.x on Python 3.10: async_timeout around connect(),
        # with socket_connect_timeout = the store's timeout, converts a cancellation that comes
        # due with its own), and the repeat would run with no deadline left: forever on a
        # paused server (socket_timeout=None). The caller turns this into its timeout.
        if entry is not None and fired(entry):
            raise asyncio.CancelledError
        return await self.client.execute_command(  # type: ignore[no-untyped-call]
            verb, script, len(keys), *keys, *args
        )

    async def aclose(self) -> None:
        """Disconnect the wire's own connections (the client closes its pool itself); one in
        use by a call in flight is disconnected as that call ends."""
        idle, self._idle = self._idle, []
        for conn in idle:  # never the parent's (see _set_aside_after_fork)
            await conn.disconnect()


def _needs_command_name(get_connection: Any) -> bool:
    """Whether the pool's ``get_connection`` has a required positional parameter."""
    try:
        params = inspect.signature(get_connection).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a C or patched pool
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in params
    )


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)
