"""Redis is up but refuses the decision (a key of another type, a missing ACL permission).

That is a misconfiguration, not an outage: no fallback mode hides it, the store is not degraded,
and the error says what is wrong (:class:`resilience.StoreError`, not ``StoreUnavailable``).
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from resilience import (
    CircuitBreaker,
    RedisStore,
    SlidingWindowLimiter,
    StoreError,
    StoreUnavailable,
)
from resilience.stores.redis._health import health_of
from resilience.stores.redis._keys import window_keys
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("fallback", ["deny", "local", "allow"])
async def test_wrongtype_key_is_a_store_error_in_every_mode(
    redis_server: RedisServer, prefix: str, fallback: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=1.0)
    lim = SlidingWindowLimiter(
        5,
        1.0,
        store=store,
        name="w",
        guard=0,
        fallback=fallback,  # type: ignore[arg-type]
    )
    log = window_keys(prefix, "w", "")[0]
    await store.client.set(log, "not a sorted set")
    for _ in range(3):
        with pytest.raises(StoreError) as info:
            await lim.try_acquire()
        assert not isinstance(info.value, StoreUnavailable)
        message = str(info.value)
        assert "WRONGTYPE" in message
        assert log in message  # names the key
        assert "another type" in message
        assert info.value.__cause__ is not None
    assert not health_of(store).degraded
    await store.client.delete(log)
    assert (await lim.try_acquire()).allowed
    await store.aclose()


async def test_noperm_is_a_store_error(fresh_redis_server: RedisServer, prefix: str) -> None:
    admin = aioredis.Redis.from_url(fresh_redis_server.url)
    await admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "limited", "on", ">secret-pw", "~*", "+@all", "-evalsha", "-eval"
    )
    url = f"redis://limited:secret-pw@127.0.0.1:{fresh_redis_server.port}/0"
    store = RedisStore.from_url(url, prefix=prefix, timeout=1.0)
    lim = SlidingWindowLimiter(5, 1.0, store=store, name="p", guard=0)
    with pytest.raises(StoreError, match="NOPERM") as info:
        await lim.try_acquire()
    assert "secret-pw" not in str(info.value)
    assert "permission" in str(info.value)
    cb = CircuitBreaker(store=store, name="b")
    with pytest.raises(StoreError, match="NOPERM"):
        await cb.call(_ok)
    assert not health_of(store).degraded
    await store.aclose()
    await admin.aclose()


async def _ok() -> str:
    return "ok"
