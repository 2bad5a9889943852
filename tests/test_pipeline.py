"""Pipeline: order, the Policy protocol, keys, decorator, and the retry/limiter interplay
(RT-12: every attempt takes a permit; a 429's Retry-After penalizes the key)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from resilience import (
    MemoryStore,
    Pipeline,
    Policy,
    RateLimited,
    RedisStore,
    Retry,
    SlidingWindowLimiter,
    backoff,
)
from resilience.pipeline import CallContext, resolve_key
from tests.redis_servers import RedisServer

T = TypeVar("T")


class Recorder:
    """A user-written policy: records enter/exit around the rest of the chain."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        self.log.append(f"{self.name}>{ctx.attempt}")
        try:
            return await call()
        finally:
            self.log.append(f"<{self.name}")


async def test_first_policy_is_outermost() -> None:
    log: list[str] = []
    pipe = Pipeline(Recorder("a", log), Recorder("b", log), Recorder("c", log))

    async def fn() -> str:
        log.append("fn")
        return "x"

    assert await pipe.call(fn) == "x"
    assert log == ["a>0", "b>0", "c>0", "fn", "<c", "<b", "<a"]


async def test_retry_outside_repeats_inner_policies_per_attempt() -> None:
    log: list[str] = []
    failures = [ConnectionError(), ConnectionError()]

    @Pipeline(Recorder("outer", log), Retry(3, backoff=backoff.constant(0)), Recorder("inner", log))
    async def fn() -> str:
        log.append("fn")
        if failures:
            raise failures.pop()
        return "ok"

    assert await fn() == "ok"
    assert log == [
        "outer>0",
        "inner>1",
        "fn",
        "<inner",
        "inner>2",
        "fn",
        "<inner",
        "inner>3",
        "fn",
        "<inner",
        "<outer",
    ]


async def test_user_policy_satisfies_protocol_and_bad_policy_is_rejected() -> None:
    assert isinstance(Recorder("x", []), Policy)
    assert isinstance(Retry(), Policy)
    with pytest.raises(TypeError, match=r"policies\[1\]"):
        Pipeline(Retry(), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        Pipeline(name=3)  # type: ignore[arg-type]


async def test_pipelines_nest_and_empty_pipeline_just_calls() -> None:
    log: list[str] = []
    inner = Pipeline(Recorder("i1", log), Recorder("i2", log))
    outer = Pipeline(Recorder("o", log), inner)

    async def fn(a: int, *, b: int) -> int:
        return a + b

    assert await outer.call(fn, 1, b=2) == 3
    assert log == ["o>0", "i1>0", "i2>0", "<i2", "<i1", "<o"]
    assert await Pipeline().call(fn, 2, b=3) == 5
    assert await Pipeline()(fn)(4, b=5) == 9


async def test_decorator_preserves_metadata_and_signature() -> None:
    async def fetch(url: str, *, timeout: float = 1.0) -> bytes:
        """Fetch a URL."""
        return url.encode()

    for wrapped in (Retry()(fetch), Pipeline(Retry(), Recorder("r", []))(fetch)):
        assert wrapped.__name__ == "fetch"
        assert wrapped.__doc__ == "Fetch a URL."
        assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
        assert inspect.signature(wrapped) == inspect.signature(fetch)
        assert inspect.iscoroutinefunction(wrapped)
        assert await wrapped("u", timeout=2.0) == b"u"


async def test_context_carries_args_and_operation_name() -> None:
    seen: list[CallContext] = []

    class Spy:
        async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
            seen.append(ctx)
            return await call()

    async def op(a: int, b: str = "z") -> None:
        return None

    await Pipeline(Spy())(op)(1, b="y")
    await Pipeline(Spy(), name="named").call(op, 2)
    assert (seen[0].args, seen[0].kwargs) == ((1,), {"b": "y"})
    assert seen[0].operation.endswith("op")
    assert (seen[1].operation, seen[1].args) == ("named", (2,))


def test_resolve_key() -> None:
    ctx = CallContext("op", ("tenant-7",), {"model": "m"})
    assert resolve_key(None, ctx) is None
    assert resolve_key("fixed", ctx) == "fixed"
    assert resolve_key(lambda t, model: f"{t}/{model}", ctx) == "tenant-7/m"
    with pytest.raises(TypeError, match="key callable must return a str"):
        resolve_key(lambda *a, **k: 3, ctx)  # type: ignore[arg-type]


async def test_policy_call_and_decorator_agree() -> None:
    r = Retry(2, backoff=backoff.constant(0))

    async def f(x: int) -> int:
        return x * 2

    assert await r.call(f, 4) == 8
    assert await r.call(f, 5) == 10  # the cached single-policy pipeline is reused
    assert await r(f)(6) == 12


async def test_saturated_limiter_is_never_exceeded_by_retries_rt12() -> None:
    # RT-12: Pipeline(Retry, limiter): every attempt (first and retries) takes a permit, so
    # over any 0.5 s window upstream calls including retries never exceed the limit (5).
    # guard=0.05 covers the wake-up jitter between the limiter's slot and our timestamp.
    limiter = SlidingWindowLimiter(5, 0.5, store=MemoryStore(), guard=0.05, name="rt12")
    retry = Retry(4, backoff=backoff.constant(0.0), deadline=1.8)
    upstream: list[float] = []

    @Pipeline(retry, limiter)
    async def call() -> None:
        upstream.append(time.monotonic())
        raise ConnectionError("503")

    results = await asyncio.gather(*(call() for _ in range(8)), return_exceptions=True)
    assert all(isinstance(r, (ConnectionError, RateLimited)) for r in results)
    upstream.sort()
    assert len(upstream) > 8  # retries happened, and went through the limiter
    worst = max(sum(1 for u in upstream if t <= u < t + 0.5) for t in upstream)
    assert worst <= 5
    # a RateLimited (deadline too close for a permit) is never retried: it surfaces
    assert any(isinstance(r, RateLimited) for r in results)


async def test_limiter_wait_is_bounded_by_the_retry_deadline() -> None:
    limiter = SlidingWindowLimiter(1, 10.0, store=MemoryStore(), guard=0, name="bounded")
    pipe = Pipeline(Retry(3, deadline=0.3), limiter)
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1

    await pipe.call(fn)
    t0 = time.monotonic()
    with pytest.raises(RateLimited):
        await pipe.call(fn)
    assert time.monotonic() - t0 < 0.25  # refused at once: the slot is 10 s away, past 0.3 s
    assert calls == 1


class TooMany(Exception):
    """An upstream 429 with Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("429")
        self.retry_after = retry_after


async def test_retry_after_penalizes_the_key_for_everyone() -> None:
    # A 429 with Retry-After: 0.3 under the limiter blocks the key, so a *different* caller
    # sharing the limiter waits ~0.3 s instead of hitting the upstream at once.
    limiter = SlidingWindowLimiter(
        100, 1.0, store=MemoryStore(), guard=0, name="pen", key=lambda tenant: tenant
    )
    first = Pipeline(Retry(1), limiter)

    async def upstream_429(tenant: str) -> None:
        raise TooMany(0.3)

    async def upstream_ok(tenant: str) -> float:
        return time.monotonic()

    t0 = time.monotonic()
    with pytest.raises(TooMany):
        await first.call(upstream_429, "acme")
    reached = await Pipeline(limiter).call(upstream_ok, "acme")
    assert reached - t0 >= 0.3
    # another tenant is not penalized
    t1 = time.monotonic()
    other = await Pipeline(limiter).call(upstream_ok, "globex")
    assert other - t1 < 0.25  # not the 0.3 s penalty of 'acme'


@pytest.mark.redis
async def test_penalty_is_shared_through_redis(redis_server: RedisServer, prefix: str) -> None:
    # Two workers (two stores, two connections) sharing one redis-server: worker A's 429
    # with Retry-After pauses worker B too; A's retry itself also waits out the hint.
    a = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    b = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    try:
        lim_a = SlidingWindowLimiter(100, 1.0, store=a, guard=0, name="api")
        lim_b = SlidingWindowLimiter(100, 1.0, store=b, guard=0, name="api")
        hits: list[tuple[str, float]] = []
        answers = [TooMany(0.4)]

        async def upstream(who: str) -> None:
            hits.append((who, time.monotonic()))
            if who == "a" and answers:
                raise answers.pop()

        t0 = time.monotonic()
        task_a = asyncio.create_task(
            Pipeline(Retry(2, backoff=backoff.constant(0)), lim_a).call(upstream, "a")
        )
        await asyncio.sleep(0.05)  # A has had its 429
        await Pipeline(lim_b).call(upstream, "b")
        await task_a
        b_time = next(t for w, t in hits if w == "b")
        a_retry = [t for w, t in hits if w == "a"][1]
        assert b_time - t0 >= 0.4
        assert a_retry - t0 >= 0.4
    finally:
        await a.aclose()
        await b.aclose()
