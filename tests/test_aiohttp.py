"""aiohttp integration: classification, typed errors, RT-7, the middleware feeding the fleet."""

from __future__ import annotations

import asyncio
import pickle
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from resilience import (
    CircuitBreaker,
    CircuitOpen,
    MemoryStore,
    Pipeline,
    Retry,
    Retryable,
    SlidingWindowLimiter,
)
from resilience import backoff as bk
from resilience.aiohttp import (
    HTTPStatusError,
    ResilienceMiddleware,
    RetryableHTTPStatus,
    is_retryable,
    raise_for_status,
    redact_url,
    retry_on,
)


class Server:
    """A scripted upstream: answers the statuses queued in ``script`` (then 200)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        await request.read()
        if self.script:
            status, headers = self.script.pop(0)
            return web.Response(status=status, headers=headers, text="no")
        return web.json_response({"ok": True})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


def fast_retry(attempts: int = 4, **kw: Any) -> Retry:
    return Retry(attempts, backoff=bk.constant(0.001), **kw)


# classification -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "headers", "retryable"),
    [
        (429, "GET", {}, True),
        (408, "GET", {}, True),
        (502, "GET", {}, True),
        (503, "GET", {}, True),
        (504, "GET", {}, True),
        (500, "GET", {}, True),  # every 5xx, as the AI SDKs do (docs/http.md)
        (529, "GET", {}, True),
        (529, "POST", {}, True),  # overloaded: provably not processed
        (409, "GET", {}, True),
        (400, "GET", {}, False),
        (404, "GET", {}, False),
        (503, "POST", {}, False),  # may have been executed
        (503, "PATCH", {}, False),
        (503, "POST", {"Idempotency-Key": "k1"}, True),  # opted in
        (429, "POST", {}, True),  # refused: provably not processed
        (503, "PUT", {}, True),
        (503, "DELETE", {}, True),
    ],
)
async def test_raise_for_status_classifies(
    server: Server, status: int, method: str, headers: dict[str, str], retryable: bool
) -> None:
    server.script.append((status, {"Retry-After": "3"}))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + "/x", headers=headers) as resp,
    ):
        with pytest.raises(HTTPStatusError) as info:
            raise_for_status(resp)
        # The response was released before raising: nothing leaks on retry.
        assert resp.connection is None
    exc = info.value
    assert exc.status == status
    assert exc.method == method
    assert isinstance(exc, aiohttp.ClientResponseError)
    assert isinstance(exc, Retryable) is retryable
    assert is_retryable(exc) is retryable
    assert exc.retry_after == (3.0 if retryable else None)
    assert exc.retry_after_source == ("retry_after" if retryable else None)
    assert exc.headers is not None
    assert exc.headers["Retry-After"] == "3"


@pytest.mark.parametrize(
    ("status", "should_retry", "retryable"),
    [(503, "false", False), (400, "true", True), (429, "False", False)],
)
async def test_the_servers_x_should_retry_wins_over_the_status(
    server: Server, status: int, should_retry: str, retryable: bool
) -> None:
    server.script.append((status, {"x-should-retry": should_retry, "Retry-After": "2"}))
    async with aiohttp.ClientSession() as session, session.get(server.url + "/x") as resp:
        with pytest.raises(HTTPStatusError) as info:
            raise_for_status(resp)
    assert isinstance(info.value, Retryable) is retryable
    assert info.value.retry_after == (2.0 if retryable else None)


async def test_success_is_returned(server: Server) -> None:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/x") as resp:
        assert raise_for_status(resp) is resp
        assert (await resp.json()) == {"ok": True}


async def test_url_is_redacted(server: Server) -> None:
    server.script.append((429, {}))
    url = server.url.replace("http://", "http://user:pw@") + "/v1/x?api_key=s3cret&page=2"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        with pytest.raises(RetryableHTTPStatus) as info:
            raise_for_status(resp)
    text = str(info.value) + repr(info.value) + str(info.value.request_info)
    assert "s3cret" not in text
    assert "pw" not in text
    assert "api_key=REDACTED" in info.value.url
    assert redact_url("https://a:b@h/p?x=1#frag") == "https://h/p?x=REDACTED"
    # Picklable (crosses process boundaries in worker fleets), and stays redacted.
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is RetryableHTTPStatus
    assert again.status == 429
    assert "s3cret" not in again.url


@pytest.mark.parametrize(
    ("headers", "hint", "source"),
    [
        ({"RateLimit": '"default";r=0;t=12'}, 12.0, "rate_limit_header"),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"}, 7.0, "rate_limit_header"),
        ({"Retry-After": "3", "RateLimit": '"default";r=0;t=12'}, 3.0, "retry_after"),
        ({}, None, None),
    ],
)
async def test_the_hint_carries_its_source(
    server: Server, headers: dict[str, str], hint: float | None, source: str | None
) -> None:
    server.script.append((429, headers))
    async with aiohttp.ClientSession() as session, session.get(server.url + "/x") as resp:
        with pytest.raises(RetryableHTTPStatus) as info:
            raise_for_status(resp)
    assert info.value.retry_after == hint
    assert info.value.retry_after_source == source
    again = pickle.loads(pickle.dumps(info.value))  # the source survives the process boundary
    assert (again.retry_after, again.retry_after_source) == (hint, source)


def test_retry_after_source_is_validated() -> None:
    with pytest.raises(ValueError, match="retry_after_source"):
        RetryableHTTPStatus(
            status=429,
            method="GET",
            url="http://h/",
            retry_after=1,
            retry_after_source="x",  # type: ignore[arg-type]
        )


def test_transport_errors() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    refused = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    assert is_retryable(refused)
    assert retry_on(idempotent=False)(refused)  # never left: safe for POST too
    disconnected = aiohttp.ServerDisconnectedError()
    assert is_retryable(disconnected)
    assert not retry_on(idempotent=False)(disconnected)  # may have been executed
    assert is_retryable(asyncio.TimeoutError())
    assert not retry_on(idempotent=False)(asyncio.TimeoutError())
    assert not is_retryable(asyncio.CancelledError())
    assert not is_retryable(ValueError())
    assert is_retryable(CircuitOpen("b", 1.0))


# RT-7: POST without an idempotency key is not retried; with one it is; connect errors are. ----


async def test_rt7_post_503_not_retried_without_key(server: Server) -> None:
    async with aiohttp.ClientSession() as session:

        @fast_retry(retry_on=retry_on(idempotent=False))
        async def post() -> Any:
            async with session.post(server.url + "/x", json={"a": 1}) as resp:
                raise_for_status(resp)
                return await resp.json()

        server.script[:] = [(503, {})] * 3
        with pytest.raises(HTTPStatusError) as info:
            await post()
    assert info.value.status == 503
    assert server.hits == 1  # 0 retries: the error surfaced


async def test_rt7_post_503_retried_with_idempotency_key(server: Server) -> None:
    async with aiohttp.ClientSession() as session:

        @fast_retry()
        async def post() -> Any:
            headers = {"Idempotency-Key": "job-1"}
            async with session.post(server.url + "/x", json={}, headers=headers) as resp:
                raise_for_status(resp)
                return await resp.json()

        server.script[:] = [(503, {}), (503, {})]
        assert await post() == {"ok": True}
    assert server.hits == 3


async def test_rt7_post_connect_refused_is_retried() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    attempts = 0
    async with aiohttp.ClientSession() as session:

        @fast_retry(3, retry_on=retry_on(idempotent=False))
        async def post() -> Any:
            nonlocal attempts
            attempts += 1
            async with session.post(f"http://127.0.0.1:{port}/x", json={}) as resp:
                raise_for_status(resp)

        with pytest.raises(aiohttp.ClientConnectorError):
            await post()
    assert attempts == 3


async def test_decorator_form_waits_retry_after(server: Server) -> None:
    # A 429 with Retry-After: 1 makes the retrier wait at least 1 s (not the 1 ms backoff).
    server.script.append((429, {"Retry-After": "1"}))
    async with aiohttp.ClientSession() as session:

        @Retry(3, backoff=bk.exponential(initial=0.001, max=5))
        async def get() -> Any:
            async with session.get(server.url + "/x") as resp:
                raise_for_status(resp)
                return await resp.json()

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await get() == {"ok": True}
        assert loop.time() - t0 >= 0.99
    assert server.hits == 2


# The 429 feeds the fleet: limiter penalty and breaker failures --------------------------------


async def test_middleware_429_penalizes_the_shared_limiter_key(server: Server) -> None:
    store = MemoryStore()
    limiter = SlidingWindowLimiter(100, 60, store=store, name="api", guard=0)
    # Another worker of the fleet: same store, same name (another process with Redis).
    other = SlidingWindowLimiter(100, 60, store=store, name="api", guard=0)
    server.script.append((429, {"Retry-After": "30"}))
    mw = ResilienceMiddleware(limiter)
    async with aiohttp.ClientSession(middlewares=(mw,)) as session:
        with pytest.raises(RetryableHTTPStatus) as info:
            async with session.get(server.url + "/x"):
                pass
    assert info.value.retry_after == 30.0
    d = await other.try_acquire()
    assert not d.allowed
    assert 29 <= d.retry_after <= 30.5


async def test_middleware_counts_429s_as_breaker_failures(server: Server) -> None:
    store = MemoryStore()
    trips: list[Any] = []
    breaker = CircuitBreaker(
        failure_threshold=3,
        window=60,
        break_duration=30,
        store=store,
        name="api",
        listeners=[trips.append],
    )
    mw = ResilienceMiddleware(breaker)
    server.script[:] = [(429, {})] * 3
    async with aiohttp.ClientSession(middlewares=(mw,)) as session:
        for _ in range(3):
            with pytest.raises(RetryableHTTPStatus):
                async with session.get(server.url + "/x"):
                    pass
        with pytest.raises(CircuitOpen):
            async with session.get(server.url + "/x"):
                pass
    assert server.hits == 3  # the 4th call failed fast, without reaching the upstream
    assert [c.new for c in trips] == ["open"]


async def test_middleware_passes_other_statuses_through(server: Server) -> None:
    server.script.append((404, {}))
    async with (
        aiohttp.ClientSession(middlewares=(ResilienceMiddleware(),)) as session,
        session.get(server.url + "/x") as resp,
    ):
        assert resp.status == 404
    server.script.append((404, {}))
    mw = ResilienceMiddleware(raise_for_status="all")
    async with aiohttp.ClientSession(middlewares=(mw,)) as session:
        with pytest.raises(HTTPStatusError) as info:
            async with session.get(server.url + "/x"):
                pass
    assert not isinstance(info.value, Retryable)
    with pytest.raises(ValueError, match="raise_for_status"):
        ResilienceMiddleware(raise_for_status="sometimes")  # type: ignore[arg-type]


async def test_pipeline_retry_breaker_limiter_end_to_end(server: Server) -> None:
    # The recommended form: retries outside aiohttp, each attempt through breaker and limiter.
    store = MemoryStore()
    limiter = SlidingWindowLimiter(10, 1.0, store=store, name="e2e", guard=0)
    breaker = CircuitBreaker(
        failure_threshold=10, window=60, break_duration=30, store=store, name="e2e"
    )
    server.script[:] = [(503, {}), (502, {})]
    async with aiohttp.ClientSession() as session:

        @Pipeline(fast_retry(), breaker, limiter)
        async def get() -> Any:
            async with session.get(server.url + "/x") as resp:
                raise_for_status(resp)
                return await resp.json()

        assert await get() == {"ok": True}
    assert server.hits == 3
    d = await limiter.try_acquire()
    assert d.remaining == 10 - 3 - 1  # every attempt took a permit
