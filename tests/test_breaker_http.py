"""The breaker's default classification with real AI SDK errors, and its per-call keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitOpen, MemoryStore, RedisStore
from tests.redis_servers import RedisServer
from tests.test_http_clients import an_body, anthropic_error, oa_body, openai_error, respond


def _raiser(exc: Exception) -> Any:
    async def call() -> None:
        raise exc

    return call


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_the_callers_faults_do_not_open_it(status: int) -> None:
    exc = openai_error(respond(status, {}, oa_body("invalid_request_error")))
    br = CircuitBreaker(3, 60.0, 30.0, store=MemoryStore(), name=f"caller{status}")
    for _ in range(10):
        with pytest.raises(type(exc)):
            await br.call(_raiser(exc))
    assert await br.state() == "closed"
    assert await br.failures() == 0


async def test_a_billing_429_is_not_a_failure_but_rate_429s_are() -> None:
    billing = openai_error(respond(429, {}, oa_body("insufficient_quota", "insufficient_quota")))
    rate = anthropic_error(respond(429, {}, an_body("rate_limit_error")))
    br = CircuitBreaker(3, 60.0, 30.0, store=MemoryStore(), name="b429")
    for _ in range(5):
        with pytest.raises(type(billing)):
            await br.call(_raiser(billing))
    assert await br.state() == "closed"
    for _ in range(3):
        with pytest.raises(type(rate)):
            await br.call(_raiser(rate))
    assert await br.state() == "open"
    with pytest.raises(CircuitOpen):
        await br.call(_raiser(rate))


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_are_failures(status: int) -> None:
    exc = anthropic_error(respond(status, {}, an_body("overloaded_error")))
    br = CircuitBreaker(2, 60.0, 30.0, store=MemoryStore(), name=f"s{status}")
    for _ in range(2):
        with pytest.raises(type(exc)):
            await br.call(_raiser(exc))
    assert await br.state() == "open"


@pytest.mark.redis
async def test_a_burst_of_hinted_429s_across_processes_counts_once(
    redis_server: RedisServer, prefix: str
) -> None:
    # Two stores on one Redis (two processes' views): 20 requests in flight when the quota ran
    # out, all answered 429 + retry-after: one failure, the breaker stays closed.
    exc = openai_error(
        respond(429, {"retry-after": "2"}, oa_body("requests", "rate_limit_exceeded"))
    )
    stores = [RedisStore.from_url(redis_server.url, prefix=prefix) for _ in range(2)]
    brs = [CircuitBreaker(3, 60.0, 30.0, store=s, name="burst", state_refresh=0) for s in stores]

    async def one(br: CircuitBreaker) -> None:
        with pytest.raises(type(exc)):
            await br.call(_raiser(exc))

    await asyncio.gather(*[one(brs[i % 2]) for i in range(20)])
    assert await brs[0].state() == "closed"
    assert await brs[1].failures() == 1
    for s in stores:
        await s.aclose()


@pytest.mark.parametrize("make", ["memory", "redis"])
async def test_per_call_keys_are_checked_the_same_on_every_store(
    make: str, request: pytest.FixtureRequest, prefix: str
) -> None:
    if make == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store: Any = RedisStore.from_url(server.url, prefix=prefix)
    else:
        store = MemoryStore()
    br = CircuitBreaker(store=store, name="keys", key=lambda k: k)
    with pytest.raises(TypeError, match="key"):
        await br.state(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        await br.state("\udcff")
    with pytest.raises(ValueError, match="key returned by the key callable"):
        await br.call(_raiser(RuntimeError()), "\udcff")
    with pytest.raises(TypeError, match="key callable must return a str"):
        await br.call(_raiser(RuntimeError()), 7)
    assert await br.state("tenant") == "closed"
    if make == "redis":
        await store.aclose()
