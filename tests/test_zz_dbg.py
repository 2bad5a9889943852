import asyncio, time
import pytest
from resilience import CircuitBreaker, CircuitOpen, RedisStore
from tests.test_breaker import fail_n, ok

async def test_dbg(redis_server, prefix):
    async def body():
        s1 = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
        s2 = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
        a = CircuitBreaker(2, store=s1, name="x", state_refresh=0.3)
        b = CircuitBreaker(2, store=s2, name="x", state_refresh=0.3)
        print("1", await b.call(ok))
        await fail_n(a, 2)
        print("2")
        with pytest.raises(CircuitOpen):
            await a.call(ok)
        print("3")
        while True:
            try:
                await b.call(ok)
            except CircuitOpen:
                break
            await asyncio.sleep(0.01)
        print("4")
        await s1.aclose()
        print("5")
        await s2.aclose()
        print("6")
    try:
        await asyncio.wait_for(body(), 5)
    except TimeoutError:
        for t in asyncio.all_tasks(): t.print_stack()
        raise
