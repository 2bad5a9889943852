"""The httpx / httpx2 transport (resilience.httpx, resilience.httpx2) with the real SDKs.

The real openai and anthropic SDKs (max_retries=0) and plain httpx/httpx2 clients call the fake
AI server (resilience.demo.ai) through ResilientTransport: retryable answers are retried after
the server's hint, billing errors and 400s are sent once, a 500 after a POST is not resent
without an idempotency key, the breaker does not count the caller's faults, the SDK raises its
own typed error for the final answer, streams are not buffered, nothing leaks.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")

from resilience import (  # noqa: E402
    CircuitBreaker,
    CircuitOpen,
    Retry,
    SlidingWindowLimiter,
    testing,
)
from resilience.demo.ai import AIUpstreamServer, Fault, start_ai_upstream  # noqa: E402
from resilience.httpx import HTTPFailure, RetryableHTTPFailure  # noqa: E402
from resilience.httpx import ResilientTransport as HttpxTransport  # noqa: E402
from resilience.httpx2 import ResilientTransport as Httpx2Transport  # noqa: E402

MESSAGES = [{"role": "user", "content": "hello world!"}]
MODULES = {"httpx": (httpx, HttpxTransport), "httpx2": (httpx2, Httpx2Transport)}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def server() -> AsyncIterator[AIUpstreamServer]:
    async with await start_ai_upstream(limit=1000, window=60.0) as s:
        yield s


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """Retries without their sleeps (where waiting is not the point)."""
    with testing.testing_mode(attempts=10):
        yield


class Tracker:
    """Wraps a module's AsyncHTTPTransport: counts requests, and every response stream that
    was opened and closed (a response never closed is a leak)."""

    def __init__(self, m: Any, inner: Any = None) -> None:
        self.m = m
        self.inner = inner if inner is not None else m.AsyncHTTPTransport()
        self.requests = 0
        self.open: list[Any] = []
        tracker = self

        class Stream(m.AsyncByteStream):  # type: ignore[misc]
            def __init__(self, wrapped: Any) -> None:
                self.wrapped = wrapped
                self.closed = False
                tracker.open.append(self)

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in self.wrapped:
                    yield chunk

            async def aclose(self) -> None:
                self.closed = True
                await self.wrapped.aclose()

        class Transport(m.AsyncBaseTransport):  # type: ignore[misc]
            async def handle_async_request(self, request: Any) -> Any:
                tracker.requests += 1
                response = await tracker.inner.handle_async_request(request)
                response.stream = Stream(response.stream)
                return response

            async def aclose(self) -> None:
                await tracker.inner.aclose()

        self.transport = Transport()

    @property
    def leaked(self) -> int:
        return sum(not s.closed for s in self.open)


def sdk_client(sdk: str, server: Any, transport: Any, module: str = "httpx2", **kw: Any) -> Any:
    m = MODULES[module][0]
    http_client = m.AsyncClient(transport=transport)
    kw.setdefault("max_retries", 0)
    if sdk == "openai":
        return openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="t", http_client=http_client, **kw
        )
    return anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="t", http_client=http_client, **kw
    )


async def create(client: Any, **kw: Any) -> Any:
    if isinstance(client, openai.AsyncOpenAI):
        return await client.chat.completions.create(model="m", messages=MESSAGES, **kw)
    return await client.messages.create(model="m", messages=MESSAGES, max_tokens=8, **kw)


async def outcome(client: Any, **kw: Any) -> Any:
    try:
        return await create(client, **kw)
    except Exception as exc:
        return exc


SDKS = ["openai", "anthropic"]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


# -- retries and hints -----------------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
async def test_429_retry_after_ms_is_waited_for(server: AIUpstreamServer, sdk: str) -> None:
    server.script(Fault.rate_limited(retry_after_ms=1500))
    client = sdk_client(sdk, server, Httpx2Transport(Retry(attempts=3, deadline=30)))
    result = await create(client)
    await client.close()
    assert not isinstance(result, Exception)
    calls = server.upstream.calls
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].t - calls[0].t >= 1.4  # the hint, not the backoff's 0.1 s
    assert [c.retry_count for c in calls] == [0, 0]  # our retry, not the SDK's


async def test_429_hint_pauses_the_limiter_key_for_every_caller(server: AIUpstreamServer) -> None:
    """A 429's hint penalises the limiter's key: a second caller that starts meanwhile waits
    for the pause too, instead of drawing its own 429."""
    server.script(Fault.rate_limited(retry_after_ms=1500))
    limiter = SlidingWindowLimiter(1000, 60.0, name=unique("pause"))
    transport = Httpx2Transport(Retry(attempts=3, deadline=30), limiter)
    client = sdk_client("anthropic", server, transport)
    first = asyncio.create_task(create(client))
    await until(lambda: bool(server.upstream.calls))
    await asyncio.sleep(0.2)  # the 429 is in, its penalty recorded
    second = await create(client)
    await first
    await client.close()
    assert not isinstance(second, Exception)
    calls = server.upstream.calls
    assert [c.status for c in calls] == [429, 200, 200]
    assert min(c.t for c in calls[1:]) - calls[0].t >= 1.4


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("fault", ["billing", "bad_request"])
async def test_billing_errors_and_400s_are_sent_once(
    server: AIUpstreamServer, sdk: str, fault: str, no_backoff: None
) -> None:
    server.script(Fault.insufficient_quota() if fault == "billing" else Fault.bad_request())
    breaker = CircuitBreaker(1, name=unique("b"))
    client = sdk_client(sdk, server, Httpx2Transport(Retry(attempts=5), breaker))
    exc = await outcome(client)
    await client.close()
    if fault == "bad_request":
        assert type(exc) is (openai if sdk == "openai" else anthropic).BadRequestError
    elif sdk == "openai":
        assert type(exc) is openai.RateLimitError
        assert exc.code == "insufficient_quota"
    else:
        assert type(exc) is anthropic.EnforcedSpendLimitReachedError
    assert server.stats().requests == 1
    assert (await breaker.state()) == "closed"  # the caller's fault: not counted


@pytest.mark.parametrize("sdk", SDKS)
async def test_500_after_a_post_is_not_resent(
    server: AIUpstreamServer, sdk: str, no_backoff: None
) -> None:
    server.script(Fault.server_error(500))
    client = sdk_client(sdk, server, Httpx2Transport(Retry(attempts=5)))
    exc = await outcome(client)
    assert type(exc) is (openai if sdk == "openai" else anthropic).InternalServerError
    assert server.stats().requests == 1
    # with an idempotency key it may be resent
    server.script(Fault.server_error(500), Fault.server_error(503))
    result = await outcome(client, extra_headers={"Idempotency-Key": "job-1"})
    await client.close()
    assert not isinstance(result, Exception)
    assert [c.status for c in server.upstream.calls] == [500, 500, 503, 200]


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("fault", ["429", "529"])
async def test_429_and_529_after_a_post_are_resent(
    server: AIUpstreamServer, sdk: str, fault: str, no_backoff: None
) -> None:
    server.script(*[Fault.rate_limited() if fault == "429" else Fault.overloaded()] * 2)
    client = sdk_client(sdk, server, Httpx2Transport(Retry(attempts=3)))
    result = await outcome(client)
    await client.close()
    assert not isinstance(result, Exception)
    assert [c.status for c in server.upstream.calls] == [int(fault), int(fault), 200]


@pytest.mark.parametrize("sdk", SDKS)
async def test_the_sdk_raises_its_typed_error_for_the_final_answer(
    server: AIUpstreamServer, sdk: str, no_backoff: None
) -> None:
    server.script(*[Fault.overloaded(message="busy")] * 3)
    tracker = Tracker(httpx2)
    client = sdk_client(
        sdk, server, Httpx2Transport(Retry(attempts=2), transport=tracker.transport)
    )
    exc = await outcome(client)
    await client.close()
    if sdk == "anthropic":
        assert type(exc) is anthropic.OverloadedError
        assert exc.body["error"] == {"type": "overloaded_error", "message": "busy"}
    else:
        assert type(exc) is openai.InternalServerError
        assert exc.body["message"] == "busy"
    assert exc.status_code == 529
    assert tracker.requests == 2 == server.stats().requests
    assert tracker.leaked == 0


@pytest.mark.parametrize("sdk", SDKS)
async def test_the_breaker_counts_upstream_faults_not_400s(
    server: AIUpstreamServer, sdk: str, no_backoff: None
) -> None:
    breaker = CircuitBreaker(3, 60.0, 30.0, name=unique("b"))
    client = sdk_client(sdk, server, Httpx2Transport(Retry(attempts=1), breaker))
    server.script(*[Fault.bad_request()] * 10)
    for _ in range(10):
        assert isinstance(
            await outcome(client), (openai.BadRequestError, anthropic.BadRequestError)
        )
    assert (await breaker.state()) == "closed"
    server.script(*[Fault.server_error(500)] * 3)  # not retried (POST), but counted
    for _ in range(3):
        exc = await outcome(client)
        assert exc.status_code == 500
    assert (await breaker.state()) == "open"
    exc = await outcome(client)
    await client.close()
    assert server.stats().requests == 13  # the open breaker sent nothing
    if sdk == "openai":
        assert isinstance(exc, CircuitOpen)  # openai lets a transport's own error through
    else:
        assert isinstance(exc, anthropic.APIConnectionError)  # anthropic wraps it
        assert isinstance(exc.__cause__, CircuitOpen)


# -- streams ---------------------------------------------------------------------------------


async def test_a_streaming_success_is_not_buffered(server: AIUpstreamServer) -> None:
    gate = server.upstream.stream_gate = asyncio.Event()
    client = sdk_client("openai", server, Httpx2Transport(Retry(attempts=3)))

    async def first_chunk() -> Any:
        stream = await create(client, stream=True, stream_options={"include_usage": True})
        return stream, await stream.__anext__()

    # the server holds the stream after its first events until the gate opens: a transport
    # that buffered the body would never return
    try:
        stream, chunk = await asyncio.wait_for(first_chunk(), timeout=10)
    finally:
        gate.set()
    assert chunk.choices[0].delta.role == "assistant"
    usage = [c.usage async for c in stream][-1]
    await client.close()
    assert usage.total_tokens == 19


async def test_anthropic_stream_through_the_transport(server: AIUpstreamServer) -> None:
    client = sdk_client("anthropic", server, Httpx2Transport(Retry(attempts=3)))
    async with client.messages.stream(model="m", messages=MESSAGES, max_tokens=8) as stream:
        message = await stream.get_final_message()
    await client.close()
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 8)


async def test_a_mid_stream_error_reaches_the_caller(
    server: AIUpstreamServer, no_backoff: None
) -> None:
    """A 200 whose stream then fails is a success for the transport (a retry must restart the
    whole call: the caller's decorator does it); the SDK raises the stream's error."""
    server.script(Fault.stream_error())
    client = sdk_client("anthropic", server, Httpx2Transport(Retry(attempts=3)))
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="m", messages=MESSAGES, max_tokens=8) as s:
            await s.get_final_message()
    await client.close()
    assert info.value.type == "overloaded_error"
    assert server.stats().requests == 1


# -- the SDK's own retries -------------------------------------------------------------------


async def test_warns_once_when_the_sdk_retries_too(
    server: AIUpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    quick = {"retry-after-ms": "1"}
    client = sdk_client("openai", server, Httpx2Transport(), max_retries=1)
    with caplog.at_level(logging.WARNING, logger="resilience.httpx"):
        for _ in range(2):
            server.script(Fault.server_error(500, headers=quick))
            await create(client)  # the SDK's retry succeeds
    await client.close()
    assert server.stats().sdk_retries == 2
    warnings = [r for r in caplog.records if r.name == "resilience.httpx"]
    assert len(warnings) == 1
    assert "max_retries=0" in warnings[0].getMessage()


async def test_no_warning_without_sdk_retries(
    server: AIUpstreamServer, caplog: pytest.LogCaptureFixture, no_backoff: None
) -> None:
    server.script(Fault.overloaded())
    client = sdk_client("anthropic", server, Httpx2Transport(Retry(attempts=2)))
    with caplog.at_level(logging.WARNING, logger="resilience.httpx"):
        await create(client)
    await client.close()
    assert not [r for r in caplog.records if r.name == "resilience.httpx"]


# -- leaks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
async def test_every_response_is_closed(
    server: AIUpstreamServer, sdk: str, no_backoff: None
) -> None:
    tracker = Tracker(httpx2)
    client = sdk_client(
        sdk, server, Httpx2Transport(Retry(attempts=3), transport=tracker.transport)
    )
    server.script(Fault.rate_limited(), Fault.overloaded())  # retried twice, then 200
    assert not isinstance(await outcome(client), Exception)
    server.script(*[Fault.server_error(503)] * 3)  # retried (idempotency key), then final
    key = {"Idempotency-Key": "k"}
    assert isinstance(await outcome(client, extra_headers=key), Exception)
    server.script(Fault.bad_request())  # returned at once
    assert isinstance(await outcome(client), Exception)
    if sdk == "openai":
        stream = await create(client, stream=True)
        async for _ in stream:
            pass
    await client.close()
    assert tracker.requests == server.stats().requests == (8 if sdk == "openai" else 7)
    assert tracker.leaked == 0


async def test_a_cancelled_call_leaks_nothing(server: AIUpstreamServer) -> None:
    tracker = Tracker(httpx2)
    server.script(Fault.rate_limited(retry_after_ms=30_000))
    client = sdk_client(
        "openai", server, Httpx2Transport(Retry(attempts=3), transport=tracker.transport)
    )
    task = asyncio.create_task(create(client))
    await until(lambda: bool(server.upstream.calls))
    await asyncio.sleep(0.1)  # in the retrier's wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    assert tracker.requests == 1
    assert tracker.leaked == 0


async def test_a_success_dropped_by_a_cancellation_is_closed(server: AIUpstreamServer) -> None:
    """A call cancelled after its response arrived but before the policies returned it (a
    breaker or limiter still talking to its store) must not leave the response open."""
    returned = asyncio.Event()

    class SlowAfter:
        async def execute(self, call: Any, ctx: Any) -> Any:
            result = await call()
            returned.set()
            await asyncio.sleep(30)
            return result

    tracker = Tracker(httpx2)
    client = sdk_client(
        "anthropic", server, Httpx2Transport(SlowAfter(), transport=tracker.transport)
    )
    task = asyncio.create_task(create(client))
    await asyncio.wait_for(returned.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    assert tracker.requests == 1
    assert tracker.leaked == 0


# -- plain httpx and httpx2 ------------------------------------------------------------------


def mock(m: Any, answers: list[Any], seen: list[Any]) -> Any:
    """A MockTransport answering in order (a status, or an exception class to raise)."""

    async def handler(request: Any) -> Any:
        seen.append((request.method, await request.aread()))
        answer = answers.pop(0)
        if isinstance(answer, type):
            raise answer("scripted", request=request)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return m.Response(status, headers=headers, json={"status": status})

    return m.MockTransport(handler)


@pytest.fixture(params=["httpx", "httpx2"])
def module(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    return MODULES[request.param]


async def test_plain_client_get_retried(module: tuple[Any, Any], no_backoff: None) -> None:
    m, transport_cls = module
    seen: list[Any] = []
    inner = mock(m, [503, (429, {"retry-after": "1"}), 200], seen)
    async with m.AsyncClient(transport=transport_cls(Retry(attempts=5), transport=inner)) as c:
        r = await c.get("http://upstream.test/x")
    assert r.status_code == 200
    assert r.json() == {"status": 200}
    assert len(seen) == 3


async def test_plain_client_final_error_is_returned(
    module: tuple[Any, Any], no_backoff: None
) -> None:
    m, transport_cls = module
    seen: list[Any] = []
    inner = mock(m, [503, 502], seen)
    async with m.AsyncClient(transport=transport_cls(Retry(attempts=2), transport=inner)) as c:
        r = await c.get("http://upstream.test/x")
        assert r.status_code == 502
        assert r.json() == {"status": 502}  # the body is there for the caller
        with pytest.raises(m.HTTPStatusError):
            r.raise_for_status()


async def test_plain_client_connect_errors_retried_for_a_post(
    module: tuple[Any, Any], no_backoff: None
) -> None:
    m, transport_cls = module
    seen: list[Any] = []
    inner = mock(m, [m.ConnectError, m.ConnectError, m.ConnectError], seen)
    async with m.AsyncClient(transport=transport_cls(Retry(attempts=3), transport=inner)) as c:
        with pytest.raises(m.ConnectError) as info:
            await c.post("http://upstream.test/x", json={"a": 1})
    assert len(seen) == 3  # never sent: safe to resend a POST
    assert any("attempt" in n for n in getattr(info.value, "__notes__", []))


async def test_plain_client_read_timeout_after_a_post_not_resent(
    module: tuple[Any, Any], no_backoff: None
) -> None:
    m, transport_cls = module
    seen: list[Any] = []
    inner = mock(m, [m.ReadTimeout, m.ReadTimeout, 200], seen)
    async with m.AsyncClient(transport=transport_cls(Retry(attempts=3), transport=inner)) as c:
        with pytest.raises(m.ReadTimeout):
            await c.post("http://upstream.test/x", json={"a": 1})
        assert len(seen) == 1
        r = await c.put("http://upstream.test/x", json={"a": 1})  # idempotent: resent
    assert r.status_code == 200
    assert len(seen) == 3


async def test_plain_client_real_refused_connection(
    module: tuple[Any, Any], no_backoff: None
) -> None:
    import socket

    m, transport_cls = module
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = Tracker(m)
    transport = transport_cls(Retry(attempts=3), transport=tracker.transport)
    async with m.AsyncClient(transport=transport) as c:
        with pytest.raises(m.ConnectError):
            await c.post(f"http://127.0.0.1:{port}/x", json={})
    assert tracker.requests == 3


async def test_a_body_cut_short_is_a_transport_error(
    module: tuple[Any, Any], no_backoff: None
) -> None:
    """An error response whose body breaks while the transport reads it: the client's read
    error, classified as such (resent for a GET, not for a POST)."""
    m: Any = module[0]
    transport_cls = module[1]
    sent: list[str] = []

    class Broken(m.AsyncByteStream):  # type: ignore[misc]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"error": '
            raise m.ReadError("connection reset")

    class Inner(m.AsyncBaseTransport):  # type: ignore[misc]
        async def handle_async_request(self, request: Any) -> Any:
            sent.append(request.method)
            if len(sent) in (1, 3):
                return m.Response(503, stream=Broken())
            return m.Response(200, json={})

    async with m.AsyncClient(transport=transport_cls(Retry(attempts=3), transport=Inner())) as c:
        assert (await c.get("http://upstream.test/")).status_code == 200
        with pytest.raises(m.ReadError):
            await c.post("http://upstream.test/")
    assert sent == ["GET", "GET", "POST"]


async def test_a_streaming_request_body_is_resent_whole(
    module: tuple[Any, Any], no_backoff: None
) -> None:
    m, transport_cls = module
    seen: list[Any] = []
    inner = mock(m, [429, 200], seen)

    async def body() -> AsyncIterator[bytes]:
        yield b"part 1, "
        yield b"part 2"

    async with m.AsyncClient(transport=transport_cls(Retry(attempts=2), transport=inner)) as c:
        r = await c.post("http://upstream.test/x", content=body())
    assert r.status_code == 200
    assert seen == [("POST", b"part 1, part 2")] * 2


async def test_raise_for_status_options(module: tuple[Any, Any], no_backoff: None) -> None:
    m, transport_cls = module
    seen: list[Any] = []
    never = transport_cls(
        Retry(attempts=3), transport=mock(m, [503], seen), raise_for_status="never"
    )
    async with m.AsyncClient(transport=never) as c:
        assert (await c.get("http://upstream.test/")).status_code == 503
    assert len(seen) == 1
    # "all" raises the caller's faults inside the pipeline too; the breaker's default still
    # does not count them (the upstream answered), a failure_on that says so does.
    default = CircuitBreaker(2, name=unique("b"))
    counting = CircuitBreaker(2, name=unique("b"), failure_on=Exception)
    for breaker in (default, counting):
        every = transport_cls(breaker, transport=mock(m, [400, 404], seen), raise_for_status="all")
        async with m.AsyncClient(transport=every) as c:
            assert (await c.get("http://upstream.test/")).status_code == 400
            assert (await c.get("http://upstream.test/")).status_code == 404
    assert (await default.state()) == "closed"
    assert (await counting.state()) == "open"


async def test_policies_see_decided_failures(module: tuple[Any, Any]) -> None:
    """What a policy sees inside the transport: the decision, the status, the hint."""
    m, transport_cls = module
    seen_by_policy: list[BaseException] = []

    class Spy:
        async def execute(self, call: Any, ctx: Any) -> Any:
            assert isinstance(ctx.args[0], m.Request)
            try:
                return await call()
            except Exception as exc:
                seen_by_policy.append(exc)
                raise

    answers: list[Any] = [(429, {"retry-after-ms": "250"}), 500, m.ConnectError]
    inner = mock(m, answers, [])
    async with m.AsyncClient(transport=transport_cls(Spy(), transport=inner)) as c:
        assert (await c.post("http://upstream.test/")).status_code == 429
        assert (await c.post("http://upstream.test/")).status_code == 500
        with pytest.raises(m.ConnectError):
            await c.post("http://upstream.test/")
    a, b, e = seen_by_policy
    assert isinstance(a, RetryableHTTPFailure)
    assert (a.status_code, a.retry_after, a.retry_after_source) == (429, 0.25, "retry_after")
    assert a.body == {"status": 429}
    assert type(b) is HTTPFailure  # a 500 after a POST: counted, not retried
    assert (b.status_code, b.retryable, b.retry_after) == (500, False, None)
    assert b.classification is not None
    assert b.classification.fault == "upstream"
    assert isinstance(e, RetryableHTTPFailure)
    assert isinstance(e.error, m.ConnectError)
    assert e.status_code is None


async def test_key_callable_receives_the_request(module: tuple[Any, Any]) -> None:
    m, transport_cls = module
    keys: list[str] = []

    def key(request: Any) -> str:
        keys.append(request.url.host)
        return request.url.host

    limiter = SlidingWindowLimiter(10, 1.0, name=unique("k"), key=key)
    inner = mock(m, [200], [])
    async with m.AsyncClient(transport=transport_cls(limiter, transport=inner)) as c:
        await c.get("http://upstream.test/")
    assert keys == ["upstream.test"]


async def test_openai_over_legacy_httpx(server: AIUpstreamServer, no_backoff: None) -> None:
    server.script(Fault.rate_limited())
    client = sdk_client("openai", server, HttpxTransport(Retry(attempts=3)), module="httpx")
    result = await create(client)
    await client.close()
    assert not isinstance(result, Exception)
    assert server.stats().requests == 2


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["httpx", "httpx2"])
def test_bad_arguments(name: str) -> None:
    m, transport_cls = MODULES[name]
    with pytest.raises(ValueError, match="raise_for_status"):
        transport_cls(raise_for_status="sometimes")
    with pytest.raises(ValueError, match="max_retry_after"):
        transport_cls(max_retry_after=-1)
    with pytest.raises(ValueError, match="max_retry_after"):
        transport_cls(max_retry_after=float("inf"))
    with pytest.raises(TypeError, match="name"):
        transport_cls(name=3)
    other = httpx2 if m is httpx else httpx
    with pytest.raises(TypeError, match="transport"):
        transport_cls(transport=other.AsyncHTTPTransport())
    with pytest.raises(TypeError, match="Policy"):
        transport_cls(object())
    t = transport_cls(Retry(attempts=2), name="calls")
    assert isinstance(t, m.AsyncBaseTransport)
    assert isinstance(t.transport, m.AsyncHTTPTransport)
    assert "Retry" in repr(t)


def test_importing_imports_no_client() -> None:
    code = (
        "import sys, resilience, resilience.httpx\n"
        "assert 'httpx' not in sys.modules and 'httpx2' not in sys.modules\n"
        "from resilience.httpx import HTTPFailure\n"
        "import resilience.httpx2\n"
        "assert 'httpx2' in sys.modules and 'httpx' not in sys.modules, 'httpx2 only'\n"
        "from resilience.httpx import ResilientTransport\n"
        "assert 'httpx' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
