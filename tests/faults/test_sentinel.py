"""Sentinel: master + replica + three sentinels; the master dies during load; the store follows
the new master and the limit holds afterwards."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores.redis._health import health_of
from tests.fault_servers import SentinelSet
from tests.faults._bounds import CANCEL_ALLOWANCE, until_healthy

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    s = SentinelSet().start()
    try:
        yield s
    finally:
        s.stop()


async def test_failover_during_load(sentinel_set: SentinelSet, prefix: str) -> None:
    store = RedisStore.from_url(sentinel_set.url, prefix=prefix, timeout=0.5)
    assert store.label == "redis+sentinel://mymaster"
    lim = SlidingWindowLimiter(1000, 1.0, store=store, name="load", guard=0)
    old_master = sentinel_set.master.port
    assert sentinel_set.master_port() == old_master
    stop = asyncio.Event()
    escaped: list[BaseException] = []

    async def load() -> None:
        while not stop.is_set():
            try:
                await lim.try_acquire()
            except BaseException as exc:
                escaped.append(exc)
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(load()) for _ in range(4)]
    await asyncio.sleep(0.3)
    sentinel_set.master.kill()
    deadline = time.monotonic() + 30
    while sentinel_set.master_port() in (old_master, -1):
        assert time.monotonic() < deadline, "sentinels did not fail over"
        await asyncio.sleep(0.1)
    new_master = sentinel_set.master_port()
    assert new_master == sentinel_set.replica.port
    # The store follows: shared decisions again (within a probe interval or two).
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        if not health_of(store).degraded:
            try:
                if await store.client.set(f"{prefix}:w", "1"):
                    break
            except Exception:
                pass
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)
    assert escaped == []
    # The limit holds on the new master: exactly 20 of 30 admitted for a fresh quota.
    exact = SlidingWindowLimiter(20, 60.0, store=store, name="after", guard=0, fallback="deny")
    admitted = sum([(await exact.try_acquire()).allowed for _ in range(30)])
    assert admitted == 20
    info = await store.client.info("replication")
    assert info["role"] == "master"
    await store.aclose()


async def test_from_sentinel_timeout_bounds_each_call(
    sentinel_set: SentinelSet, prefix: str
) -> None:
    """``from_sentinel(timeout=...)`` is the store's bound, whatever the client's own
    ``socket_timeout``: a hanging master costs a decision ``timeout``, not 3 s."""
    store = RedisStore.from_sentinel(
        sentinel_set.addresses, sentinel_set.service, prefix=prefix, timeout=0.3, socket_timeout=3.0
    )
    assert store.timeout == 0.3
    lim = SlidingWindowLimiter(10, 60.0, store=store, name="t", guard=0, fallback="deny")
    assert (await lim.try_acquire()).allowed
    took: list[float] = []
    # One decision's time is one sample: a loaded 2-core machine that deschedules this
    # process past the 50 ms allowance gets a second run (after the store recovered).
    for _ in range(2):
        sentinel_set.master.signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await lim.try_acquire()
            took.append(time.monotonic() - t0)
        finally:
            sentinel_set.master.signal(signal.SIGCONT)
        if took[-1] <= 0.3 + CANCEL_ALLOWANCE:
            break
        await until_healthy(store, lim)  # the next run must wait on the master again
    assert took[-1] <= 0.3 + CANCEL_ALLOWANCE, took  # not the client's 3 s socket_timeout
    await store.aclose()


async def test_store_connections_go_to_the_master(
    sentinel_set: SentinelSet, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own connections connect through Sentinel's master lookup: never to a
    connection's default address (localhost:6379; a guard refuses to send anywhere but to this
    test's servers, so a machine's own Redis is never touched)."""
    ours = {sentinel_set.master.port, sentinel_set.replica.port}
    send = AbstractConnection.send_packed_command

    async def guarded(self: AbstractConnection, *args: object, **kwargs: object) -> None:
        port = getattr(self, "port", None)
        if isinstance(self, SentinelManagedConnection) and port not in ours:
            raise RedisConnectionError(f"test guard: not one of this test's servers: {port}")
        await send(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AbstractConnection, "send_packed_command", guarded)
    store = RedisStore.from_sentinel(sentinel_set.addresses, sentinel_set.service, prefix=prefix)
    lim = SlidingWindowLimiter(10, 60.0, store=store, name="m", guard=0, fallback="deny")
    await asyncio.gather(*(lim.try_acquire() for _ in range(4)))
    assert store._wire is not None
    ports = [getattr(c, "port", None) for c in store._wire._idle]
    assert ports
    assert set(ports) == {sentinel_set.master.port}
    await store.aclose()
