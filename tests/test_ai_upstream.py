"""The fake AI server (resilience.demo.ai) driven by the real openai and anthropic SDKs.

Every scripted fault reaches the SDK as the exception class the real provider's answer gives,
and resilience.http classifies that real exception as the status table says; the quotas answer
real-looking 429s with the providers' headers; streams run to completion with usage; the
mid-stream error event; the figures; the server as a separate process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from resilience.demo.ai import (  # noqa: E402
    AIUpstream,
    AIUpstreamProcess,
    AIUpstreamServer,
    Fault,
    count_tokens,
    go_duration,
    main,
    start_ai_upstream,
)
from resilience.http import WaitHint, classify, rate_limit_state, wait_hint  # noqa: E402
from resilience.testing import FakeClock  # noqa: E402

MESSAGES = [{"role": "user", "content": "hello world!"}]  # 12 characters: 3 input tokens


@pytest.fixture
async def server() -> AsyncIterator[AIUpstreamServer]:
    async with await start_ai_upstream(limit=1000, window=60.0) as s:
        yield s


def oa_client(server: Any, **kw: Any) -> Any:
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", **kw)


def an_client(server: Any, **kw: Any) -> Any:
    kw.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test", **kw)


async def call(sdk: str, server: Any, **kw: Any) -> Any:
    """One non-streaming call through the real SDK; returns the result or the exception."""
    client = oa_client(server) if sdk == "openai" else an_client(server)
    try:
        if sdk == "openai":
            return await client.chat.completions.create(
                model="gpt-test", messages=MESSAGES, max_tokens=8, **kw
            )
        return await client.messages.create(
            model="claude-test", messages=MESSAGES, max_tokens=8, **kw
        )
    except Exception as exc:
        return exc
    finally:
        await client.close()


def shape(exc: BaseException) -> tuple[bool, str | None, bool]:
    c = classify(exc)
    assert c is not None
    return (c.retryable, c.fault, c.processed)


# -- the wire formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1, "0s"),
        (0.25, "250ms"),
        (0.0004, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.9994, "1m0s"),  # rounded up
        (59.9981, "59.999s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.5, "1m30.5s"),
        (3600, "1h0m0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_count_tokens() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 41}], "max_tokens": 10}
    assert count_tokens("openai", body) == (11, 10)
    assert count_tokens("openai", {**body, "max_completion_tokens": 4}) == (11, 4)
    assert count_tokens("openai", {k: v for k, v in body.items() if k != "max_tokens"}) == (11, 16)
    assert count_tokens("openai", body, output_ratio=0.5) == (11, 5)
    parts = [{"type": "text", "text": "x" * 8}, {"type": "image"}]
    anth = {"model": "m", "system": "s" * 4, "max_tokens": 3, "messages": [
        {"role": "user", "content": parts}]}  # fmt: skip
    assert count_tokens("anthropic", anth) == (3, 3)
    with pytest.raises(ValueError, match="max_tokens"):
        count_tokens("anthropic", {k: v for k, v in anth.items() if k != "max_tokens"})
    with pytest.raises(ValueError, match="messages"):
        count_tokens("openai", {"model": "m", "messages": []})
    with pytest.raises(ValueError, match="model"):
        count_tokens("openai", {"messages": [{"role": "user", "content": "x"}]})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"token_limit": 0}, "token_limit"),
        ({"input_token_limit": 1.5}, "input_token_limit"),
        ({"advertised_limit": 0}, "advertised_limit"),
        ({"exhaust_every": 0}, "exhaust_every"),
        ({"slow_rate": 2}, "slow_rate"),
        ({"slow_delay": -1}, "slow_delay"),
        ({"output_ratio": 0}, "output_ratio"),
        ({"default_max_tokens": 0}, "default_max_tokens"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AIUpstream(**kwargs)


def test_bad_faults() -> None:
    with pytest.raises(ValueError, match="status"):
        Fault(status=200)
    with pytest.raises(ValueError, match="delay"):
        Fault.slow(-1)
    with pytest.raises(TypeError, match="Fault"):
        AIUpstream().script("500")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        Fault.from_dict({"status": 500, "colour": "red"})
    f = Fault.rate_limited(retry_after_ms=1500, retry_after="2")
    assert Fault.from_dict(json.loads(json.dumps(f.to_dict()))) == f


async def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await start_ai_upstream(host="0.0.0.0")
    assert main(["--host", "0.0.0.0"]) == 2


# -- every scripted fault through both SDKs ---------------------------------------------------

RETRY = (True, "upstream", True)
NOT_PROCESSED = (True, "upstream", False)
CALLER = (False, "caller", True)

# (id, fault, openai class, anthropic class, classification)
FAULTS: list[tuple[str, Callable[[], Fault], str, str, tuple[bool, str | None, bool]]] = [
    ("500", lambda: Fault.server_error(500), "InternalServerError", "InternalServerError", RETRY),
    ("502", lambda: Fault.server_error(502), "InternalServerError", "InternalServerError", RETRY),
    (
        "503",
        lambda: Fault.server_error(503),
        "InternalServerError",
        "ServiceUnavailableError",
        RETRY,
    ),
    ("529", Fault.overloaded, "InternalServerError", "OverloadedError", NOT_PROCESSED),
    (
        "billing 429",
        Fault.insufficient_quota,
        "RateLimitError",
        "EnforcedSpendLimitReachedError",
        (False, "caller", False),
    ),
    ("400", Fault.bad_request, "BadRequestError", "BadRequestError", CALLER),
    ("413", Fault.too_large, "APIStatusError", "ContentTooLargeError", CALLER),
    ("429 scripted", Fault.rate_limited, "RateLimitError", "RateLimitError", NOT_PROCESSED),
    (
        "503 x-should-retry false",
        lambda: Fault.should_retry(False),
        "InternalServerError",
        "ServiceUnavailableError",
        (False, "upstream", True),
    ),
    (
        "400 x-should-retry true",
        lambda: Fault.should_retry(True, 400),
        "BadRequestError",
        "BadRequestError",
        (True, "caller", True),
    ),
]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("make", "oa_cls", "an_cls", "expected"),
    [f[1:] for f in FAULTS],
    ids=[f[0] for f in FAULTS],
)
async def test_scripted_faults_through_the_sdks(
    server: AIUpstreamServer,
    sdk: str,
    make: Callable[[], Fault],
    oa_cls: str,
    an_cls: str,
    expected: tuple[bool, str | None, bool],
) -> None:
    fault = make()
    server.script(fault)
    exc = await call(sdk, server)
    module = openai if sdk == "openai" else anthropic
    cls = getattr(module, oa_cls if sdk == "openai" else an_cls)
    assert type(exc) is cls, exc
    assert exc.status_code == fault.status
    assert shape(exc) == expected
    if sdk == "openai":
        assert exc.request_id
        assert exc.response.headers["x-request-id"] == exc.request_id
        if fault.billing:
            assert (exc.code, exc.type) == ("insufficient_quota", "insufficient_quota")
    else:
        assert exc.response.headers["request-id"].startswith("req_")
    stats = server.stats()
    assert (stats.requests, stats.faults, stats.ok) == (1, 1, 0)
    assert stats.by_status == {fault.status: 1}
    # the next call is answered normally
    result = await call(sdk, server)
    assert not isinstance(result, Exception)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_scripted_hints(server: AIUpstreamServer, sdk: str) -> None:
    server.script(Fault.rate_limited(retry_after_ms=1500, retry_after="2"))
    exc = await call(sdk, server)
    assert isinstance(exc, (openai.RateLimitError, anthropic.RateLimitError))
    c = classify(exc)
    assert c is not None
    assert c.wait == WaitHint(1.5, "retry_after")
    assert c.processed is False


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_wrong_api_key(sdk: str) -> None:
    async with await start_ai_upstream(api_key="right") as server:
        exc = await call(sdk, server)
        assert isinstance(exc, (openai.AuthenticationError, anthropic.AuthenticationError))
        assert shape(exc) == CALLER
        assert server.stats().by_status == {401: 1}


async def test_malformed_requests(server: AIUpstreamServer) -> None:
    async with httpx2.AsyncClient() as client:
        r = await client.post(server.url + "/v1/chat/completions", content=b"{not json")
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = await client.post(
            server.url + "/v1/messages", json={"model": "c", "messages": MESSAGES}
        )
        assert r.status_code == 400
        assert r.json()["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: field required",
        }
    assert server.stats().by_status == {400: 2}


# -- the quotas ------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_request_quota_answers_real_looking_429s(sdk: str) -> None:
    clock = FakeClock(100.0)
    async with await start_ai_upstream(limit=2, window=60.0, clock=clock) as server:
        assert not isinstance(await call(sdk, server), Exception)
        clock.advance(10)
        assert not isinstance(await call(sdk, server), Exception)
        clock.advance(5)
        exc = await call(sdk, server)
        h = exc.response.headers
        if sdk == "openai":
            assert type(exc) is openai.RateLimitError
            assert (exc.type, exc.code) == ("requests", "rate_limit_exceeded")
            assert "Limit 2, Used 2, Requested 1" in exc.message
            # the first admission leaves the window 45 s from now
            assert (h["retry-after-ms"], h["retry-after"]) == ("45000", "45")
            assert h["x-ratelimit-limit-requests"] == "2"
            assert h["x-ratelimit-remaining-requests"] == "0"
            assert h["x-ratelimit-reset-requests"] == "45s"
        else:
            assert type(exc) is anthropic.RateLimitError
            assert exc.body["error"]["type"] == "rate_limit_error"
            assert h["retry-after"] == "45"
            assert h["anthropic-ratelimit-requests-limit"] == "2"
            assert h["anthropic-ratelimit-requests-remaining"] == "0"
            reset = wait_hint({"anthropic-ratelimit-requests-remaining": "0",
                               "anthropic-ratelimit-requests-reset":
                                   h["anthropic-ratelimit-requests-reset"]})  # fmt: skip
            assert reset is not None
            assert 44 <= reset.seconds <= 47
        c = classify(exc)
        assert c is not None
        assert (c.retryable, c.processed, c.wait) == (True, False, WaitHint(45.0, "retry_after"))
        clock.advance(45)  # the first admission leaves the window
        assert not isinstance(await call(sdk, server), Exception)
        stats = server.stats()
        assert (stats.requests, stats.ok, stats.quota_429, stats.max_in_window) == (4, 3, 1, 2)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_success_headers_report_the_quotas(sdk: str) -> None:
    async with await start_ai_upstream(
        limit=5,
        window=60.0,
        token_limit=1000,
        input_token_limit=600,
        output_token_limit=400,
        advertised_limit=50,
    ) as server:
        client = oa_client(server) if sdk == "openai" else an_client(server)
        if sdk == "openai":
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES, max_tokens=8
            )
            usage = raw.parse().usage
            assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 8, 11)
        else:
            raw = await client.messages.with_raw_response.create(
                model="m", messages=MESSAGES, max_tokens=8
            )
            usage = (await raw.parse()).usage
            assert (usage.input_tokens, usage.output_tokens) == (3, 8)
        await client.close()
        state = rate_limit_state(raw.headers)
        if sdk == "openai":
            assert state.limits == {"requests": 50, "tokens": 1000}
            assert raw.headers["x-ratelimit-remaining-requests"] == "49"  # advertised - used
            assert raw.headers["x-ratelimit-remaining-tokens"] == "989"
            assert raw.headers["x-request-id"].startswith("req_")
        else:
            assert state.limits == {
                "requests": 50,
                "tokens": 1000,
                "input-tokens": 600,
                "output-tokens": 400,
            }
            assert raw.headers["anthropic-ratelimit-input-tokens-remaining"] == "597"
            assert raw.headers["anthropic-ratelimit-output-tokens-remaining"] == "392"
        assert not state.exhausted


async def test_quota_lower_than_advertised() -> None:
    async with await start_ai_upstream(limit=2, window=60.0, advertised_limit=10) as server:
        results = [await call("openai", server) for _ in range(3)]
        exc = results[2]
        assert type(exc) is openai.RateLimitError
        assert exc.response.headers["x-ratelimit-limit-requests"] == "10"
        assert exc.response.headers["x-ratelimit-remaining-requests"] == "8"  # it lies


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_token_quota_counts_actual_tokens(sdk: str) -> None:
    clock = FakeClock()
    # each call: 3 input tokens + 8 output tokens = 11
    async with await start_ai_upstream(
        limit=100, window=10.0, token_limit=25, clock=clock
    ) as server:
        assert not isinstance(await call(sdk, server), Exception)
        clock.advance(1)
        assert not isinstance(await call(sdk, server), Exception)
        clock.advance(1)
        exc = await call(sdk, server)  # 22 + 11 > 25
        assert isinstance(exc, (openai.RateLimitError, anthropic.RateLimitError))
        if sdk == "openai":
            assert exc.type == "tokens"
            # 3 left in its 10 s window: 18 per minute, as providers count
            assert exc.response.headers["x-ratelimit-remaining-tokens"] == "18"
            assert exc.response.headers["retry-after-ms"] == "8000"
        else:
            assert exc.response.headers["anthropic-ratelimit-tokens-remaining"] == "18"
            assert exc.response.headers["retry-after"] == "8"
        stats = server.stats()
        assert (stats.input_tokens, stats.output_tokens, stats.total_tokens) == (6, 16, 22)
        assert stats.max_tokens_in_window == 22
        assert stats.quota_429 == 1


async def test_separate_input_and_output_quotas() -> None:
    async with await start_ai_upstream(limit=100, output_token_limit=10) as server:
        assert not isinstance(await call("anthropic", server), Exception)  # 8 output tokens
        exc = await call("anthropic", server)
        assert type(exc) is anthropic.RateLimitError
        assert "output tokens" in exc.message
        assert exc.response.headers["anthropic-ratelimit-output-tokens-remaining"] == "2"


async def test_another_client_exhausts_the_quota() -> None:
    clock = FakeClock()
    async with await start_ai_upstream(
        limit=3, window=10.0, exhaust_every=5.0, clock=clock
    ) as server:
        assert not isinstance(await call("openai", server), Exception)  # t=0
        clock.advance(5)  # the other client takes the 2 slots left at t=5
        exc = await call("openai", server)
        assert type(exc) is openai.RateLimitError
        assert exc.response.headers["retry-after-ms"] == "5000"  # our t=0 admission leaves
        clock.advance(5)  # t=10: ours leaves, but the other client takes the slot at once
        exc = await call("openai", server)
        assert type(exc) is openai.RateLimitError
        stats = server.stats()
        assert (stats.ok, stats.quota_429, stats.other_tenant) == (1, 2, 3)
        assert stats.max_in_window == 1  # only ours are counted


async def test_admissions_never_exceed_the_window() -> None:
    async with await start_ai_upstream(limit=5, window=60.0) as server:
        results = await asyncio.gather(*(call("anthropic", server) for _ in range(20)))
        assert sum(not isinstance(r, Exception) for r in results) == 5
        stats = server.stats()
        assert (stats.ok, stats.quota_429, stats.max_in_window) == (5, 15, 5)


# -- streams ---------------------------------------------------------------------------------


async def test_openai_stream_with_usage(server: AIUpstreamServer) -> None:
    client = oa_client(server)
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    await client.close()
    assert len("".join(text).split()) == 8
    assert finish == "length"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 8, 11)
    assert server.stats().total_tokens == 11


async def test_openai_stream_without_usage(server: AIUpstreamServer) -> None:
    client = oa_client(server)
    stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    usages = [chunk.usage async for chunk in stream]
    await client.close()
    assert usages
    assert all(u is None for u in usages)


async def test_anthropic_stream_with_usage(server: AIUpstreamServer) -> None:
    client = an_client(server)
    events = []
    async with client.messages.stream(
        model="claude-test", messages=MESSAGES, max_tokens=8
    ) as stream:
        async for event in stream:
            events.append(event.type)
        message = await stream.get_final_message()
    await client.close()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "message_delta" in events
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 8)
    assert message.stop_reason == "max_tokens"
    assert len(message.content[0].text.split()) == 8


async def test_anthropic_mid_stream_overloaded(server: AIUpstreamServer) -> None:
    server.script(Fault.stream_error())
    client = an_client(server)
    seen: list[str] = []

    async def consume() -> None:
        async with client.messages.stream(
            model="claude-test", messages=MESSAGES, max_tokens=8
        ) as stream:
            async for event in stream:
                seen.append(event.type)

    with pytest.raises(anthropic.APIStatusError) as info:
        await consume()
    await client.close()
    assert "content_block_delta" in seen  # the error came midway
    exc = info.value
    assert exc.status_code == 200
    assert exc.type == "overloaded_error"
    assert shape(exc) == RETRY
    stats = server.stats()
    assert (stats.ok, stats.stream_errors) == (1, 1)


async def test_openai_mid_stream_error(server: AIUpstreamServer) -> None:
    server.script(Fault.stream_error("server_error"))
    client = oa_client(server)
    stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    await client.close()
    assert shape(info.value) == RETRY


async def test_stream_error_on_a_plain_call_is_a_529(server: AIUpstreamServer) -> None:
    server.script(Fault.stream_error())
    exc = await call("anthropic", server)
    assert type(exc) is anthropic.OverloadedError


# -- slowness, retries seen, the process ------------------------------------------------------


async def test_slow_answers() -> None:
    async with await start_ai_upstream(slow_rate=1.0, slow_delay=0.2) as server:
        t0 = time.monotonic()
        assert not isinstance(await call("openai", server), Exception)
        assert time.monotonic() - t0 >= 0.2
        server.upstream.slow_rate = 0.0
        server.script(Fault.slow(0.2))
        t0 = time.monotonic()
        assert not isinstance(await call("anthropic", server), Exception)
        assert time.monotonic() - t0 >= 0.2
        assert server.stats().ok == 2


async def test_a_refused_slow_fault_waits_for_an_admitted_call() -> None:
    async with await start_ai_upstream(limit=1, window=60.0) as server:
        assert not isinstance(await call("openai", server), Exception)
        server.script(Fault.slow(0.1))
        assert isinstance(await call("openai", server), openai.RateLimitError)
        assert server.upstream.pending_faults == 1


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_counts_the_sdk_retries(server: AIUpstreamServer, sdk: str) -> None:
    quick = {"retry-after-ms": "1"}  # the SDKs honour it: no real backoff
    server.script(Fault.server_error(500, headers=quick), Fault.server_error(500, headers=quick))
    client = (
        oa_client(server, max_retries=2) if sdk == "openai" else an_client(server, max_retries=2)
    )
    if sdk == "openai":
        await client.chat.completions.create(model="m", messages=MESSAGES)
    else:
        await client.messages.create(model="m", messages=MESSAGES, max_tokens=4)
    await client.close()
    stats = server.stats()
    assert stats.retry_counts == {0: 1, 1: 1, 2: 1}
    assert stats.sdk_retries == 2
    assert (stats.requests, stats.ok) == (3, 1)


async def test_the_demo_endpoint_still_works(server: AIUpstreamServer) -> None:
    async with httpx2.AsyncClient() as client:
        r = await client.post(server.url + "/v1/analyze")
        assert r.json() == {"ok": True, "n": 1}


@pytest.mark.slow
async def test_as_a_process() -> None:
    with AIUpstreamProcess(limit=2, window=60.0, token_limit=1000) as up:
        up.script(Fault.overloaded())
        exc = await call("anthropic", up)
        assert type(exc) is anthropic.OverloadedError
        assert not isinstance(await call("openai", up), Exception)
        assert not isinstance(await call("anthropic", up), Exception)
        assert isinstance(await call("openai", up), openai.RateLimitError)
        stats = up.stats()
        assert (stats.requests, stats.ok, stats.faults, stats.quota_429) == (4, 2, 1, 1)
        assert stats.by_status == {200: 2, 429: 1, 529: 1}
    assert up.final == stats
    with pytest.raises(ValueError, match="unknown"):
        AIUpstreamProcess(colour="red")
