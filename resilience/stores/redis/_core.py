"""The Redis store's shared machinery: scripts, the bounded call path, connections.

Scripts live one per file in ``stores/redis/lua/``. Each decision is one ``EVALSHA`` with the SHA1
computed locally; on ``NOSCRIPT`` (after a restart, ``SCRIPT FLUSH`` or a failover) the call is
repeated once as ``EVAL``, which runs the source and caches it again, so the source crosses the
wire only when the server lacks it, and recovery costs one extra round trip, not two (redis-py's
``register_script`` would ``SCRIPT LOAD`` and then ``EVALSHA``).

(A little over 400 lines: the call path, its deadline and its gate, the script cache and the
fork hooks must stay together, as each assumes the others' invariants.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import secrets
import sys
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from resilience._deadline import arm, disarm, uncancel_if_expired
from resilience._gate import Gate
from resilience.errors import StoreError, StoreUnavailable
from resilience.stores._events import StoreObservers
from resilience.stores.redis._errors import (
    CLIENT_ERRORS,
    client_label,
    client_secrets,
    client_timeout,
    is_reply_error,
    reply_error,
)
from resilience.stores.redis._health import StoreHealth
from resilience.stores.redis._wire import Wire

__all__ = ["RedisCore", "as_str", "lua_source", "nonce"]

_HAS_CANCELLING = sys.version_info >= (3, 11)  # Task.cancelling()
_Eval = Callable[[Any, str, Sequence[str], Sequence[Any]], Coroutine[Any, Any, Any]]
_current_task = asyncio.current_task

if sys.version_info >= (3, 11):

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

else:  # pragma: no cover - Python 3.10

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return 0


_SOURCES: dict[str, str] = {}
_monotonic = time.monotonic


def _keeps_cancellations(fn: _Eval) -> _Eval:
    """On Python 3.10 (no ``Task.cancelling()``), run ``fn`` in a shielded task: when the
    caller is cancelled, the in-flight call finishes first, then the cancellation propagates
    (see ``RedisCore._eval``). On 3.11+ ``fn`` compares the task's cancelling count itself."""
    if _HAS_CANCELLING:
        return fn

    async def shielded(  # pragma: no cover - Python 3.10
        self: Any, name: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        inner = asyncio.ensure_future(fn(self, name, keys, args))
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.shield(inner)
            raise

    return shielded  # pragma: no cover - Python 3.10


def lua_source(name: str) -> str:
    """The text of ``stores/redis/lua/<name>.lua`` (read once per process)."""
    src = _SOURCES.get(name)
    if src is None:
        lua = resources.files("resilience.stores.redis").joinpath("lua")
        src = lua.joinpath(f"{name}.lua").read_text("utf-8")
        _SOURCES[name] = src
    return src


class _Nonce:
    """Fleet-unique request ids: a random per-process prefix (renewed after fork) + a counter."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


nonce = _Nonce()
_cores: weakref.WeakSet[RedisCore] = weakref.WeakSet()  # every live store, for _after_fork


def _after_fork() -> None:
    """In a child, right after ``fork()``: a new request-id prefix, and a fresh gate for each
    store. The calls the parent had in flight (and queued) never end in the child: on the
    parent's gate their slots would never come back, and a slot handed to one of its queued
    callers would be lost; with all slots taken the child's store would wait forever."""
    nonce.reset()
    for core in list(_cores):
        if core._max_concurrency:
            core._gate = Gate(core._max_concurrency)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class RedisCore:
    """Base of :class:`resilience.RedisStore` (see there for the public constructor).

    Owns the client, the script SHAs, the bound on commands in flight (``_gate``), the command
    path (``_wire``), the store's health (``_health``: degraded mode, the call bound) and its
    observers (``_observers``).
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        prefix: str = "resilience",
        max_concurrency: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(client, (aioredis.Redis, RedisCluster)):
            raise TypeError(
                "client must be a redis.asyncio.Redis or redis.asyncio.RedisCluster, "
                f"got {type(client).__name__}"
            )
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a non-empty str without braces, got {prefix!r}")
        if max_concurrency is not None:
            if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
                raise TypeError(
                    "max_concurrency must be a positive int (a count of commands in flight), "
                    f"got {type(max_concurrency).__name__} {max_concurrency!r}"
                )
            if max_concurrency <= 0:
                raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < 3600
        ):
            raise ValueError(f"timeout must be a number of seconds in (0, 3600), got {timeout!r}")
        self.client = client
        self.prefix = prefix
        #: The bound on one store call in seconds (``None``: from the client, see health).
        self.timeout = None if timeout is None else float(timeout)
        self._observers = StoreObservers()
        self._health = StoreHealth(
            client_label(client),
            self.timeout or client_timeout(client),
            secrets=client_secrets(client),
            observers=self._observers,
        )
        self._scripts: dict[str, str] = {}  # script name -> SHA1 of its source
        self._max_concurrency = max_concurrency
        self._gate: Gate | None = Gate(max_concurrency) if max_concurrency else None
        # redis-py's async RedisCluster breaks connections ("'NoneType' object has no attribute
        # 'writelines'", an AttributeError) when a burst of commands races its lazy topology
        # discovery: the first call initializes it alone (see ready).
        self._cluster_pending = isinstance(client, RedisCluster)
        self._init_lock = asyncio.Lock()
        # Standalone clients: commands go straight onto redis-py connections (see _wire.py),
        # the store's own ones when it bounds how many are in flight.
        self._wire: Wire | None = (
            Wire(client, keep=self._gate is not None) if Wire.supports(client) else None
        )
        # Further clients the store made and closes with its own (a Sentinel's, see
        # RedisStore.from_sentinel).
        self._owned: list[aioredis.Redis] = []
        _cores.add(self)

    def __repr__(self) -> str:
        return f"RedisStore({self.label!r}, prefix={self.prefix!r})"

    @property
    def label(self) -> str:
        """A short label for logs and telemetry: ``redis://host:port/db``, never credentials."""
        return self._health.label

    @label.setter
    def label(self, value: str) -> None:
        self._health.label = value

    @property
    def decides_locally(self) -> bool:
        """Always ``False``: decisions are shared, in Redis (see
        :attr:`resilience.stores.Store.decides_locally`)."""
        return False

    @property
    def observers(self) -> StoreObservers:
        """Where this store reports entering and leaving degraded mode (see
        :attr:`resilience.stores.Store.observers`)."""
        return self._observers

    def _sha(self, name: str) -> str:
        sha = self._scripts.get(name)
        if sha is None:
            sha = self._scripts[name] = hashlib.sha1(lua_source(name).encode()).hexdigest()
        return sha

    @_keeps_cancellations
    async def _eval(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` within the store's timeout; fail fast while degraded.

        The timeout bounds the whole call, from here: the wait for one of the store's
        ``max_concurrency`` slots included (a call that waited in the queue while the store
        became degraded fails fast when its turn comes). A call that ran out of time while
        Redis answered other calls does not degrade the store (see
        :meth:`StoreHealth.timed_out`).

        A cancellation is never lost. redis-py 8 can swallow a ``cancel()`` that lands as the
        reply arrives (measured: about a third of cancellations racing a reply, on Python 3.10
        and 3.11 alike) and return the reply instead; the caller would then go on (sleep on a
        reservation, run a probe) as if never cancelled. Here such a call raises
        ``CancelledError`` after the script has run, so the caller's cleanup (releasing a slot,
        returning a probe) always comes after the script: on 3.11+ by comparing the task's
        ``cancelling()`` count; on 3.10, which has no such count, by awaiting the call through
        ``asyncio.shield`` and, when cancelled, letting the in-flight call finish first.
        """
        task = _current_task()
        if task is None:  # pragma: no cover - not inside a task
            raise RuntimeError("a store call needs a running asyncio task")
        before = _cancelling(task)
        health = self._health
        deadline = _monotonic() + health.timeout
        gate = self._gate
        since = health.oks  # Redis's answers so far: did it answer others while we waited?
        granted = 0.0
        if gate is not None and not gate.try_enter():
            health.check()  # fail fast instead of queueing while degraded
            granted = await self._queue(gate, deadline, task, health, since)
        try:
            # The health protocol (see _health.py) and the store's deadline, inline: this
            # runs on every decision, and each wrapping coroutine costs the hot path.
            probe = health.enter()
            entry = arm(deadline, task)
            try:
                result = await self._script(name, keys, args, entry)
            except StoreUnavailable as exc:
                raise health.failed(exc, probe) from exc.__cause__
            except StoreError:
                health.succeeded()  # Redis answered: it is up
                raise
            except asyncio.CancelledError:
                if uncancel_if_expired(entry):
                    waited = granted - (deadline - health.timeout) if granted else 0.0
                    raise health.timed_out(probe, since, waited) from None
                health.abandoned(probe)
                raise
            except BaseException:
                health.abandoned(probe)
                raise
            finally:
                disarm(entry)
        finally:
            if gate is not None:
                gate.leave()
        health.succeeded()
        if granted:
            health.observe_round_trip(_monotonic() - granted)
        if _cancelling(task) > before:
            raise asyncio.CancelledError
        return result

    async def _queue(
        self,
        gate: Gate,
        deadline: float,
        task: asyncio.Task[Any],
        health: StoreHealth,
        since: int,
    ) -> float:
        """Wait for a slot of ``gate`` until ``deadline`` and return the time it was granted.

        Raise :class:`StoreUnavailable` (holding no slot) at the deadline, or when the slot
        comes with less time left than a round trip has been taking: such a command would be
        cancelled in flight, which costs its connection (redis-py drops it, and reconnecting
        costs another round trip) and Redis's work for nothing. Under a slow Redis and a queue,
        the oldest waiters, served first, are exactly those: they fall back at once instead,
        and the slot passes to a caller with time enough."""
        entry = arm(deadline, task)
        try:
            await gate.enter()
        except asyncio.CancelledError:
            if uncancel_if_expired(entry):
                raise health.queue_timed_out(since, gate.slots) from None
            raise
        finally:
            disarm(entry)
        now = _monotonic()
        if deadline - now < health.round_trip:
            gate.leave()
            raise health.no_time_left(deadline - now)
        return now

    async def _script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], entry: list[Any] | None = None
    ) -> Any:
        """Run script ``name`` (under ``entry``, the call's deadline); any Redis failure becomes
        :class:`StoreUnavailable`."""
        sha = self._sha(name)
        wire = self._wire
        try:
            # On NOSCRIPT (the server lost its script cache: restart, SCRIPT FLUSH, failover)
            # EVAL runs the source and caches it again, in one round trip.
            if wire is not None:
                try:
                    return await wire.evalsha(sha, keys, args, entry)
                except NoScriptError:
                    return await wire.eval(lua_source(name), keys, args, entry)
            if self._cluster_pending:
                await self.ready()
            try:
                return await self.client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                return await self.client.eval(lua_source(name), len(keys), *keys, *args)
        except CLIENT_ERRORS as exc:
            if is_reply_error(exc):
                raise reply_error(
                    self.label, self.prefix, name, keys, exc, self._health.secrets
                ) from exc
            raise StoreUnavailable(
                f"store {self.label} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except (OSError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(
                f"store {self.label} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except (AttributeError, TypeError) as exc:
            # Cluster failover: after a connection error redis-py's async RedisCluster (8.1)
            # refreshes its topology on the next command while other commands are in flight,
            # and closes connections under them ("'NoneType' object has no attribute
            # 'writelines'"; on Python 3.12 also "'NoneType' object is not callable"). The
            # cluster is up, so this is not an outage (the store is not degraded): this one
            # call falls back and the next uses the new topology.
            if not isinstance(self.client, RedisCluster):
                raise
            raise StoreUnavailable(
                f"store {self.label} failed during a topology refresh: {exc}"
            ) from exc

    async def ready(self) -> None:
        """Discover a Cluster's topology, once, before the first burst of commands (redis-py's
        lazy discovery breaks connections when commands race it). Nothing for a standalone
        client. The command path calls it; so does the breaker-events subscription."""
        if not self._cluster_pending:
            return
        async with self._init_lock:
            if self._cluster_pending:
                await self.client.initialize()
                self._cluster_pending = False

    async def open_pubsub(self) -> tuple[PubSub, aioredis.ConnectionPool]:
        """A ``PubSub`` on a connection pool of its own, and that pool (disconnect it when
        done): never one of the store's connections, which ``max_concurrency`` sizes for
        commands, nor one of the client's pool, which the application sizes for its own.

        The pool is made with the client's connection class and settings (address,
        credentials, TLS, a Sentinel master lookup; fakeredis's connection settings name its
        in-process server, so a fake store's subscription reaches the same fake Redis). On a
        Cluster it connects to one primary, chosen at random (a classic ``PUBLISH`` reaches
        every node; another one is chosen after a failure).
        """
        client = self.client
        if isinstance(client, RedisCluster):
            await self.ready()
            node = random.choice(client.get_primaries() or client.get_nodes())
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
        else:
            shared = client.connection_pool
            pool = aioredis.ConnectionPool(
                connection_class=shared.connection_class, **shared.connection_kwargs
            )
        return PubSub(pool), pool

    async def aclose(self) -> None:
        """Close the underlying client (and its connection pool), and the sentinels' clients
        of a store made by ``from_sentinel``."""
        if self._wire is not None:
            await self._wire.aclose()
        await self.client.aclose()
        owned, self._owned = self._owned, []
        for client in owned:
            await client.aclose()


def as_str(value: Any) -> str:
    """Decode a reply element whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)
