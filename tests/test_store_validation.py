"""RedisStore's constructors: counts must be ints (``True`` is not a count), and
``from_sentinel`` keeps its ``timeout``."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from resilience import RedisStore
from resilience.stores.redis._health import health_of


@pytest.mark.parametrize("bad", [True, False, 2.0, "8"])
def test_max_connections_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match="max_connections"):
        RedisStore.from_url("redis://127.0.0.1:1/0", max_connections=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_connections"):
        RedisStore.from_sentinel(
            [("127.0.0.1", 1)],
            "mymaster",
            max_connections=bad,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("bad", [True, False, 2.0, "8"])
async def test_max_concurrency_must_be_an_int(bad: object) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=1)
    with pytest.raises(TypeError, match="max_concurrency"):
        RedisStore(client, max_concurrency=bad)  # type: ignore[arg-type]
    await client.aclose()


@pytest.mark.parametrize("bad", [0, -1])
async def test_counts_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        RedisStore.from_url("redis://127.0.0.1:1/0", max_connections=bad)
    client = aioredis.Redis(host="127.0.0.1", port=1)
    with pytest.raises(ValueError, match="max_concurrency"):
        RedisStore(client, max_concurrency=bad)
    await client.aclose()


async def test_from_sentinel_keeps_its_timeout() -> None:
    store = RedisStore.from_sentinel([("127.0.0.1", 1)], "mymaster", timeout=0.3)
    assert store.timeout == 0.3
    assert health_of(store).timeout == 0.3
    await store.aclose()
