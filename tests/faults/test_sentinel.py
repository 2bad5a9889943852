"""Sentinel: master + replica + three sentinels; the master dies during load; the store follows
the new master and the limit holds afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from resilience import RedisStore, SlidingWindowLimiter
from resilience.stores.health import health_of
from tests.fault_servers import SentinelSet

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
