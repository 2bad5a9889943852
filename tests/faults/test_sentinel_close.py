"""Closing a store made through Sentinel closes every connection it opened, the sentinels'
included (``RedisStore.from_url("redis+sentinel://...")`` leaves no way to reach them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilience import RedisStore
from resilience.stores.base import WindowLimit
from tests.fault_servers import SentinelSet

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LIMITS = (WindowLimit("w", 100, 10_000_000),)


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    s = SentinelSet().start()
    try:
        yield s
    finally:
        s.stop()


async def test_closing_a_sentinel_store_closes_the_sentinels_connections(
    sentinel_set: SentinelSet, prefix: str
) -> None:
    # Left open, they stay open until garbage collected; redis-py < 5.1 then closes them
    # through their event loop, long closed ("Event loop is closed", an unraisable exception).
    store = RedisStore.from_url(sentinel_set.url, prefix=prefix, timeout=2.0)
    assert await store.client.set(f"{prefix}:k", 1)  # the client asks a sentinel for the master
    assert (await store.window_acquire(LIMITS, "", (1,), -1)).allowed
    pool = store._wire.pool if store._wire is not None else None
    assert pool is not None
    sentinels = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    conns = [c for s in sentinels for c in s.connection_pool._available_connections]
    assert any(c.is_connected for c in conns)
    await store.aclose()
    assert not any(c.is_connected for c in conns)
