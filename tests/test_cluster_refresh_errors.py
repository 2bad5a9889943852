"""redis-py's async RedisCluster can break a command during a topology refresh with a bare
``AttributeError`` or ``TypeError`` (a connection closed under it): the store turns that into
``StoreUnavailable`` for a cluster client, so the policy's fallback decides; for a standalone
client such an error is a bug and propagates."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores.redis._health import health_of


@pytest.mark.parametrize(
    "error",
    [
        AttributeError("'NoneType' object has no attribute 'writelines'"),
        TypeError("'NoneType' object is not callable"),
    ],
)
async def test_a_refresh_race_is_a_store_failure_not_an_escape(error: Exception) -> None:
    client = RedisCluster(host="127.0.0.1", port=1)
    store = RedisStore(client, prefix="x")
    store._cluster_pending = False

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    client.evalsha = broken  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable, match="topology refresh"):
        await store.window_acquire(SlidingWindowLimiter(5, 1.0)._limits, "", (1,), -1)
    assert not health_of(store).degraded  # the cluster is up: not an outage
    lim = SlidingWindowLimiter(5, 1.0, store=store, fallback="local")
    assert (await lim.try_acquire()).allowed  # the fallback decided


async def test_the_same_errors_propagate_from_a_standalone_client() -> None:
    store = RedisStore(aioredis.Redis(port=1), prefix="x")

    class BrokenWire:
        async def evalsha(self, *args: Any) -> Any:
            raise TypeError("a bug")

    store._wire = BrokenWire()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="a bug"):
        await store.window_acquire(SlidingWindowLimiter(5, 1.0)._limits, "", (1,), -1)
