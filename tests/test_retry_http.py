"""The default classification of Retry, the limiter's fleet pause and the CircuitOpen rule, with
the real AI SDKs' and httpx's exceptions (built by the SDKs themselves through mock
transports): no retry_on, no wrapper code."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitOpen, Retry, SlidingWindowLimiter, testing
from resilience.backoff import exponential
from resilience.pipeline import CallContext
from resilience.policies.retry._predicates import default_retryable, hint_of, hint_source_of
from resilience.stores import MemoryStore
from tests.test_http_clients import (
    an_body,
    anthropic_error,
    httpx2,
    oa_body,
    openai_error,
    respond,
)

httpx = pytest.importorskip("httpx")


def _sdk_error(sdk: str, status: int, headers: dict[str, str], etype: str, code: Any = None):
    if sdk == "openai":
        return openai_error(respond(status, headers, oa_body(etype, code)))
    return anthropic_error(respond(status, headers, an_body(etype, code)))


def _refused(request: Any) -> Any:
    raise httpx2.ConnectError("connection refused", request=request)


RETRIED = [
    (429, "rate_limit_error"),
    (500, "api_error"),
    (503, "api_error"),
    (529, "overloaded_error"),
    (408, "timeout_error"),
    (409, "conflict"),
]
NOT_RETRIED = [
    (400, "invalid_request_error", None),
    (401, "authentication_error", None),
    (403, "permission_error", None),
    (404, "not_found_error", None),
    (413, "request_too_large", None),
    (422, "invalid_request_error", None),
]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize(("status", "etype"), RETRIED)
def test_sdk_errors_the_table_retries_are_retried_by_default(sdk: str, status: int, etype: str):
    assert default_retryable(_sdk_error(sdk, status, {}, etype))


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize(("status", "etype", "code"), NOT_RETRIED)
def test_the_callers_faults_are_not_retried(sdk: str, status: int, etype: str, code: Any):
    assert not default_retryable(_sdk_error(sdk, status, {}, etype, code))


def test_billing_429s_and_the_servers_word_win() -> None:
    quota = openai_error(respond(429, {}, oa_body("insufficient_quota", "insufficient_quota")))
    assert not default_retryable(quota)
    spend = anthropic_error(
        respond(429, {}, an_body("rate_limit_error", "enforced_spend_limit_reached"))
    )
    assert not default_retryable(spend)
    no = openai_error(respond(503, {"x-should-retry": "false"}, oa_body("server_error")))
    assert not default_retryable(no)
    yes = openai_error(respond(400, {"x-should-retry": "true"}, oa_body("invalid_request_error")))
    assert default_retryable(yes)


def test_transport_errors_of_the_sdks_and_httpx_are_retried() -> None:
    from tests.test_http_clients import _anthropic, _openai

    oa, an = _openai(_refused), _anthropic(_refused)
    calls: list[Callable[[], Any]] = [
        lambda: oa.chat.completions.create(model="m", messages=[]),
        lambda: an.messages.create(model="m", max_tokens=1, messages=[]),
    ]
    for call in calls:
        with pytest.raises(Exception, match="onnection") as info:
            call()
        assert not isinstance(info.value, ConnectionError)  # the SDKs' own class tree
        assert default_retryable(info.value), type(info.value)
    req = httpx.Request("GET", "http://upstream.test/")
    assert default_retryable(httpx.ConnectError("refused", request=req))
    assert default_retryable(httpx.ReadTimeout("slow", request=req))
    resp = httpx.Response(503, request=req)
    assert default_retryable(httpx.HTTPStatusError("503", request=req, response=resp))
    resp = httpx.Response(404, request=req)
    assert not default_retryable(httpx.HTTPStatusError("404", request=req, response=resp))


@pytest.mark.parametrize(
    ("headers", "seconds", "source"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5, "retry_after"),
        ({"retry-after": "2"}, 2.0, "retry_after"),
        (
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"},
            360.0,
            "rate_limit_header",
        ),
    ],
)
def test_the_hint_of_an_sdk_429(headers: dict[str, str], seconds: float, source: str) -> None:
    exc = openai_error(respond(429, headers, oa_body("requests", "rate_limit_exceeded")))
    assert hint_of(exc) == pytest.approx(seconds)
    assert hint_source_of(exc) == source


def test_a_non_retryable_error_asks_for_no_wait() -> None:
    exc = openai_error(
        respond(429, {"retry-after": "5"}, oa_body("insufficient_quota", "insufficient_quota"))
    )
    assert hint_of(exc) is None


async def test_an_insufficient_quota_fails_after_exactly_one_request() -> None:
    calls = 0
    exc = openai_error(respond(429, {}, oa_body("insufficient_quota", "insufficient_quota")))

    @Retry(attempts=6, backoff=exponential(initial=0.001, max=0.002), deadline=60)
    async def call() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(type(exc)):
        await call()
    assert calls == 1


async def test_retry_after_ms_delays_the_next_attempt(caplog: pytest.LogCaptureFixture) -> None:
    exc = openai_error(
        respond(429, {"retry-after-ms": "1500"}, oa_body("requests", "rate_limit_exceeded"))
    )
    calls = 0

    @Retry(attempts=2, backoff=exponential(initial=0.001, max=30.0), deadline=60)
    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc
        return "ok"

    with caplog.at_level(logging.WARNING, logger="resilience"), testing.testing_mode(attempts=2):
        assert await call() == "ok"
    [rec] = [r for r in caplog.records if getattr(r, "delay", None) is not None]
    assert rec.delay >= 1.4  # type: ignore[attr-defined]
    assert rec.delay_source == "retry_after"  # type: ignore[attr-defined]


async def test_an_sdk_429_with_a_hint_pauses_the_limiters_key() -> None:
    exc = anthropic_error(respond(429, {"retry-after": "3"}, an_body("rate_limit_error")))
    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="pause", guard=0)

    async def call() -> None:
        raise exc

    with pytest.raises(type(exc)):
        await lim.execute(call, CallContext("op"))
    d = await lim.try_acquire()
    assert not d.allowed
    assert 2.5 < d.retry_after <= 3.0


async def test_a_400_does_not_pause_the_limiter() -> None:
    exc = anthropic_error(respond(400, {"retry-after": "3"}, an_body("invalid_request_error")))
    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="nopause", guard=0)

    async def call() -> None:
        raise exc

    with pytest.raises(type(exc)):
        await lim.execute(call, CallContext("op"))
    assert (await lim.try_acquire()).allowed


async def test_a_break_within_the_deadline_is_waited_out_past_the_backoff_cap() -> None:
    calls = 0

    @Retry(attempts=3, backoff=exponential(initial=0.001, max=0.01), deadline=60)
    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise CircuitOpen("upstream", retry_after=30.0)
        return "probe ok"

    with testing.testing_mode(attempts=3):  # no sleep; the delay is still computed and checked
        assert await call() == "probe ok"
    assert calls == 2


async def test_a_break_past_the_deadline_gives_up_at_once() -> None:
    calls = 0

    @Retry(attempts=3, backoff=exponential(initial=0.001, max=0.01), deadline=10)
    async def call() -> str:
        nonlocal calls
        calls += 1
        raise CircuitOpen("upstream", retry_after=30.0)

    t0 = time.monotonic()
    with pytest.raises(CircuitOpen):
        await call()
    assert calls == 1
    assert time.monotonic() - t0 < 5  # gave up, did not wait for the break


async def test_without_a_deadline_the_cap_still_bounds_a_break() -> None:
    calls = 0

    @Retry(attempts=3, backoff=exponential(initial=0.001, max=0.01))
    async def call() -> str:
        nonlocal calls
        calls += 1
        raise CircuitOpen("upstream", retry_after=30.0)

    with pytest.raises(CircuitOpen):
        await call()
    assert calls == 1
    await asyncio.sleep(0)


async def test_a_policy_refusal_wrapped_by_an_sdk_keeps_the_librarys_rules() -> None:
    # The anthropic SDK wraps what its transport raises in APIConnectionError (from it): a
    # breaker's CircuitOpen inside the transport must not look like a network failure outside.
    from tests.test_http_clients import _anthropic

    inner = CircuitOpen("upstream", retry_after=30.0)

    def handler(request: Any) -> Any:
        raise inner

    client = _anthropic(handler)
    with pytest.raises(Exception, match="onnection") as info:
        client.messages.create(model="m", max_tokens=1, messages=[])
    wrapped = info.value
    assert wrapped.__cause__ is inner
    assert hint_of(wrapped) == 30.0  # the break's end, not a network failure's backoff
    # retried only when the deadline covers the break (the CircuitOpen rule)
    assert default_retryable(wrapped)

    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="wrapped", guard=0)

    async def call() -> None:
        raise wrapped

    with pytest.raises(type(wrapped)):
        await lim.execute(call, CallContext("op"))
    assert (await lim.try_acquire()).allowed  # a refusal is not an upstream pause


async def test_retry_warns_once_when_the_sdk_retried_too(caplog: pytest.LogCaptureFixture) -> None:
    # The SDK's max_retries was left above 0: its requests carry x-stainless-retry-count > 0.
    openai = pytest.importorskip("openai")
    req = httpx2.Request(
        "POST", "http://upstream.test/v1/chat/completions", headers={"x-stainless-retry-count": "2"}
    )
    exc = openai.InternalServerError("500", response=httpx2.Response(500, request=req), body=None)

    @Retry(attempts=2, backoff=exponential(initial=0.001, max=0.002))
    async def call() -> None:
        raise exc

    with caplog.at_level(logging.WARNING, logger="resilience"):
        for _ in range(3):
            with pytest.raises(type(exc)):
                await call()
    warned = [r for r in caplog.records if "x-stainless-retry-count" in r.getMessage()]
    assert len(warned) == 1
    assert "max_retries=0" in warned[0].getMessage()


async def test_no_warning_when_the_sdk_did_not_retry(caplog: pytest.LogCaptureFixture) -> None:
    exc = openai_error(respond(503, {}, oa_body("server_error")))  # max_retries=0: count 0

    @Retry(attempts=2, backoff=exponential(initial=0.001, max=0.002))
    async def call() -> None:
        raise exc

    with caplog.at_level(logging.WARNING, logger="resilience"), pytest.raises(type(exc)):
        await call()
    assert not [r for r in caplog.records if "x-stainless-retry-count" in r.getMessage()]
