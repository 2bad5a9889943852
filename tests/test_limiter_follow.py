"""Limits learned from the upstream (issue 15): a limiter follows the provider's rate-limit
headers, fleet-wide through the store: an exhausted quota pauses the key until its reset, a
lower provider limit is adopted until it expires or the provider reports more."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience import MemoryStore, Pipeline, RedisStore, SlidingWindowLimiter, all_of, telemetry
from resilience.telemetry import names
from tests.redis_servers import RedisServer


class Response:
    """What the httpx transport and the aiohttp middleware hand back: a status and headers."""

    def __init__(self, headers: dict[str, str], status_code: int = 200) -> None:
        self.status_code = status_code
        self.headers = headers


class APIStatusError(Exception):
    """Shaped like the SDKs' errors: ``status_code`` and ``response.headers``."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        super().__init__(f"Error code: {status_code}")
        self.status_code = status_code
        self.response = Response(headers, status_code)
        self.body = {"error": {"type": "invalid_request_error", "message": "bad"}}


def openai(limit: int, remaining: int, reset: str = "1s") -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "199000",
        "x-ratelimit-reset-tokens": "300ms",
    }


async def admitted(lim: SlidingWindowLimiter, key: str | None = None) -> int:
    n = 0
    while (await lim.try_acquire(key=key)).allowed:
        n += 1
        assert n <= 1000
    return n


async def test_a_lower_provider_limit_is_adopted() -> None:
    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="openai-rpm")

    @lim
    async def call() -> Response:
        return Response(openai(limit=10, remaining=9))

    await call()
    assert await admitted(lim) == 9  # 10 per minute, one of them used by the call


async def test_the_provider_limit_is_scaled_to_the_limiters_window() -> None:
    # 300 per minute is 30 per 6 s.
    lim = SlidingWindowLimiter(100, 6.0, store=MemoryStore(), name="rpm", guard=0)
    await lim(_returning(Response(openai(limit=300, remaining=299))))()
    assert await admitted(lim) == 29


async def test_a_higher_provider_limit_lifts_the_learned_one() -> None:
    lim = SlidingWindowLimiter(20, 60.0, store=MemoryStore(), name="lift", guard=0)
    await lim(_returning(Response(openai(limit=5, remaining=4))))()
    assert await admitted(lim) == 4
    # The provider now reports more than configured (an answer to a call admitted before
    # the cap: a call made now would wait for the capped window): the configured 20 is back.
    # The memo renews or lifts at most once per provider window per key: a new limiter
    # object in the same store stands for "a window later".
    again = SlidingWindowLimiter(20, 60.0, store=lim.store, name="lift", guard=0)
    assert again._follow is not None
    await again._follow.seen(Response(openai(limit=500, remaining=499)), "", None, pause=True)
    assert await admitted(again) == 20 - 5


async def test_an_exhausted_quota_pauses_the_key_before_any_429() -> None:
    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="exhausted", guard=0)
    await lim(_returning(Response(openai(limit=100, remaining=0, reset="1s"))))()
    d = await lim.try_acquire()
    assert not d.allowed
    assert 0.8 < d.retry_after <= 1.0
    assert (await lim.try_acquire(key="other-model")).allowed  # only this key


async def test_anthropic_and_ietf_fields_are_followed() -> None:
    store = MemoryStore()
    tokens = SlidingWindowLimiter(
        90_000, 60.0, store=store, name="itpm", cost=lambda n: n, upstream_quota="input-tokens"
    )
    await tokens(_returning(Response({
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "29000",
        "anthropic-ratelimit-input-tokens-reset": "2099-01-01T00:00:00Z",
    })))(1000)  # fmt: skip
    assert not (await tokens.try_acquire(cost=29_001)).allowed
    assert (await tokens.try_acquire(cost=29_000)).allowed
    # IETF: a policy of 6 per 2 s, scaled to a 4 s window: 12.
    ietf = SlidingWindowLimiter(50, 4.0, store=store, name="ietf", guard=0)
    await ietf(_returning(Response({
        "RateLimit-Policy": '"default";q=6;w=2',
        "RateLimit": '"default";r=5;t=1',
    })))()  # fmt: skip
    assert await admitted(ietf) == 11


async def test_an_error_carrying_headers_teaches_too() -> None:
    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="err", guard=0)

    @lim
    async def call() -> None:
        raise APIStatusError(400, openai(limit=7, remaining=6))

    with pytest.raises(APIStatusError):
        await call()
    assert await admitted(lim) == 6


async def test_follow_upstream_false_ignores_the_headers() -> None:
    lim = SlidingWindowLimiter(
        100, 60.0, store=MemoryStore(), name="off", guard=0, follow_upstream=False
    )
    await lim(_returning(Response(openai(limit=10, remaining=0))))()
    assert await admitted(lim) == 99


async def test_all_of_follows_each_quota() -> None:
    store = MemoryStore()
    rpm = SlidingWindowLimiter(100, 60.0, store=store, name="rpm", guard=0)
    tpm = SlidingWindowLimiter(1_000_000, 60.0, store=store, name="tpm", guard=0, cost=5)
    both = all_of(rpm, tpm)
    headers = openai(limit=50, remaining=49)
    headers["x-ratelimit-limit-tokens"] = "1000"
    await both(_returning(Response(headers)))()
    assert not (await both.try_acquire(cost={"rpm": 1, "tpm": 996})).allowed
    assert (await both.try_acquire(cost={"rpm": 1, "tpm": 995})).allowed
    assert (await rpm.try_acquire()).allowed  # rpm: 50 learned, 2 used


def test_bad_options_name_the_parameter() -> None:
    with pytest.raises(TypeError, match="follow_upstream"):
        SlidingWindowLimiter(1, 1.0, follow_upstream="yes")  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="upstream_quota"):
        SlidingWindowLimiter(1, 1.0, upstream_quota=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ telemetry


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tp, meter_provider=mp)
    try:
        yield exporter, reader
    finally:
        telemetry.configure()
        tp.shutdown()
        mp.shutdown()


async def test_a_learned_limit_is_an_event_and_a_gauge(
    spans: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    exporter, reader = spans
    lim = SlidingWindowLimiter(100, 60.0, store=MemoryStore(), name="seen")
    await Pipeline(lim)(_returning(Response(openai(limit=10, remaining=9))))()
    events = [e for s in exporter.get_finished_spans() for e in s.events]
    learned = [e for e in events if e.name == names.EVENT_RATE_LIMITER_UPSTREAM_LIMIT]
    assert len(learned) == 1
    attrs = dict(learned[0].attributes or {})
    assert attrs[names.ATTR_RATE_LIMITER_LIMIT] == 10
    assert attrs[names.ATTR_RATE_LIMITER_CONFIGURED_LIMIT] == 100
    assert attrs[names.ATTR_RATE_LIMITER_QUOTA] == "requests"
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        getattr(p, "value", None)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == names.METRIC_RATE_LIMITER_LIMIT
        for p in m.data.data_points
    ]
    assert points == [10]


# ---------------------------------------------------------------------- two processes, Redis

_LEARNER = textwrap.dedent(
    """
    import asyncio, sys
    from resilience import RedisStore, SlidingWindowLimiter

    class Response:
        status_code = 200
        headers = {"RateLimit-Policy": '"requests";q=3;w=1', "RateLimit": '"requests";r=2;t=1'}

    async def main():
        store = RedisStore.from_url(sys.argv[1], prefix=sys.argv[2])
        lim = SlidingWindowLimiter(100, 10.0, store=store, name="shared", guard=0)

        @lim
        async def call():
            return Response()

        await call()
        await store.aclose()

    asyncio.run(main())
    """
)


@pytest.mark.redis
async def test_a_learned_limit_is_shared_by_processes_and_expires(
    redis_server: RedisServer, prefix: str
) -> None:
    # Another process learns "3 per second" (30 per 10 s, held for two provider windows:
    # 2 s); this process, which never saw the headers, is capped too, then is not.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LEARNER, redis_server.url, prefix
    )
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    learned_at = time.monotonic()
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    try:
        lim = SlidingWindowLimiter(100, 10.0, store=store, name="shared", guard=0)
        assert await admitted(lim) == 29  # 30 per 10 s, one used by the other process
        await asyncio.sleep(max(0.0, 2.3 - (time.monotonic() - learned_at)))
        assert await admitted(lim) == 100 - 30  # expired: the configured 100
    finally:
        await store.aclose()


def _returning(value: Any) -> Any:
    async def call(*args: Any) -> Any:
        return value

    return call
