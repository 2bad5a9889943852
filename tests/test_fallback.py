"""Fallback: every trigger and non-trigger, alternatives in order, placement with Retry, and
cancellation (never a trigger, never followed by an alternative)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from resilience import (
    CircuitBreaker,
    CircuitOpen,
    Fallback,
    MemoryStore,
    Pipeline,
    RateLimited,
    Retry,
    Retryable,
    SlidingWindowLimiter,
    StoreError,
    StoreUnavailable,
    backoff,
)
from resilience.policies.fallback import default_trigger


class StatusCodeError(Exception):
    """The AI SDKs' / httpx's shape: ``status_code`` and a response with headers."""

    def __init__(self, status_code: int, body: object = None) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code
        self.response = type("R", (), {"headers": {}})()
        self.body = body


class ConnectErrorLike(Exception):
    """A transport failure as httpx names it (duck-typed by resilience.http)."""


ConnectErrorLike.__name__ = "ConnectError"
ConnectErrorLike.__module__ = "httpx"


class Calls:
    """An upstream that records its calls and fails (or returns) as told."""

    def __init__(self, outcome: object = "primary") -> None:
        self.outcome = outcome
        self.args: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.args.append((args, kwargs))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    @property
    def n(self) -> int:
        return len(self.args)


TRIGGERS = [
    CircuitOpen("b", 1.0),
    RateLimited("l", 2.0),
    StatusCodeError(429),
    StatusCodeError(500),
    StatusCodeError(502),
    StatusCodeError(503),
    StatusCodeError(529),
    StatusCodeError(408),
    TimeoutError(),
    ConnectionError(),
    ConnectionRefusedError(),
    Retryable(),
]

NON_TRIGGERS = [
    StatusCodeError(400),
    StatusCodeError(401),
    StatusCodeError(404),
    StatusCodeError(409),
    StatusCodeError(413),
    StatusCodeError(422),
    StatusCodeError(429, {"error": {"code": "insufficient_quota"}}),  # billing: caller's fault
    ValueError("bug"),
    KeyError("k"),
    StoreUnavailable("redis down"),
    StoreError("WRONGTYPE"),
]


@pytest.mark.parametrize("exc", TRIGGERS, ids=repr)
async def test_every_default_trigger_falls_back(exc: Exception) -> None:
    primary, alt = Calls(exc), Calls("secondary")
    fb = Fallback(alt)
    assert await fb.call(primary, 1, x=2) == "secondary"
    assert alt.args == [((1,), {"x": 2})]
    assert default_trigger(exc)


@pytest.mark.parametrize("exc", NON_TRIGGERS, ids=repr)
async def test_no_caller_fault_nor_unknown_error_falls_back(exc: Exception) -> None:
    primary, alt = Calls(exc), Calls("secondary")
    with pytest.raises(type(exc)) as info:
        await Fallback(alt).call(primary)
    assert info.value is exc
    assert alt.n == 0
    assert not default_trigger(exc)


async def test_a_transport_error_of_a_client_falls_back() -> None:
    primary, alt = Calls(ConnectErrorLike("refused")), Calls("secondary")
    assert await Fallback(alt).call(primary) == "secondary"


async def test_a_refusal_wrapped_by_a_client_falls_back() -> None:
    class APIConnectionError(Exception):
        pass

    try:
        try:
            raise CircuitOpen("inner", 3.0)
        except CircuitOpen as e:
            raise APIConnectionError("wrapped") from e
    except APIConnectionError as wrapped:
        exc = wrapped
    assert await Fallback(Calls("alt")).call(Calls(exc)) == "alt"


async def test_cancellation_never_falls_back() -> None:
    started = asyncio.Event()
    alt = Calls("secondary")

    async def slow() -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    task = asyncio.ensure_future(Fallback(alt).call(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert alt.n == 0


async def test_a_cancelled_alternative_propagates_and_no_further_one_runs() -> None:
    started = asyncio.Event()
    third = Calls("third")

    async def second() -> str:
        started.set()
        await asyncio.sleep(10)
        return "never"

    fb = Fallback([second, third])
    task = asyncio.ensure_future(fb.call(Calls(StatusCodeError(503))))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert third.n == 0


async def test_alternatives_are_tried_in_order_until_one_serves() -> None:
    a, b, c = Calls(StatusCodeError(503)), Calls(CircuitOpen("b2", 1)), Calls("c")
    d = Calls("d")
    assert await Fallback([a, b, c, d]).call(Calls(TimeoutError())) == "c"
    assert (a.n, b.n, c.n, d.n) == (1, 1, 1, 0)


async def test_an_alternative_failing_for_the_callers_fault_ends_the_call() -> None:
    bad = StatusCodeError(400)
    a, b = Calls(bad), Calls("b")
    with pytest.raises(StatusCodeError) as info:
        await Fallback([a, b]).call(Calls(StatusCodeError(503)))
    assert info.value is bad
    assert b.n == 0
    assert "fallback: failed" in "\n".join(getattr(info.value, "__notes__", []))


async def test_when_every_alternative_fails_the_last_failure_propagates_with_a_note() -> None:
    last = StatusCodeError(502)
    with pytest.raises(StatusCodeError) as info:
        await Fallback([Calls(TimeoutError()), Calls(last)], name="fb").call(
            Calls(CircuitOpen("primary", 5))
        )
    assert info.value is last
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "fb: every alternative failed" in note
    for failure in ("CircuitOpen", "TimeoutError", "status 502"):
        assert failure in note


async def test_the_failure_is_passed_to_an_alternative_that_asks_for_it() -> None:
    seen: list[Any] = []

    async def cached(prompt: str, *, exception: BaseException | None) -> str:
        seen.append(exception)
        return f"cached {prompt}"

    exc = RateLimited("l", 1)
    assert await Fallback(cached).call(Calls(exc), "hi") == "cached hi"
    assert seen == [exc]

    async def takes_kwargs(prompt: str, **kwargs: Any) -> str:  # no keyword-only `exception`
        assert kwargs == {}
        return "plain"

    assert await Fallback(takes_kwargs).call(Calls(exc), "hi") == "plain"
    partial = functools.partial(cached, "fixed")
    assert await Fallback(partial).call(Calls(exc)) == "cached fixed"


async def test_on_replaces_the_default_literally() -> None:
    class Mine(Exception):
        pass

    alt = Calls("alt")
    fb = Fallback(alt, on=Mine)
    assert await fb.call(Calls(Mine())) == "alt"
    with pytest.raises(CircuitOpen):  # not named: no longer a trigger
        await fb.call(Calls(CircuitOpen("b", 1)))
    fb2 = Fallback(alt, on=(Mine, StoreUnavailable))
    assert await fb2.call(Calls(StoreUnavailable("x"))) == "alt"
    extended = Fallback(alt, on=lambda e: default_trigger(e) or isinstance(e, Mine))
    assert await extended.call(Calls(Mine())) == "alt"
    assert await extended.call(Calls(StatusCodeError(503))) == "alt"
    with pytest.raises(StatusCodeError):
        await extended.call(Calls(StatusCodeError(400)))


async def test_on_result_flags_a_returned_but_unusable_value() -> None:
    empty, ok = Calls({"choices": []}), Calls({"choices": ["x"]})
    fb = Fallback([Calls({"choices": []}), ok], on_result=lambda r: not r["choices"])
    assert await fb.call(empty) == {"choices": ["x"]}
    # The last alternative's flagged result is returned (as Retry does), not raised.
    only = Fallback(Calls({"choices": []}), on_result=lambda r: not r["choices"])
    assert await only.call(empty) == {"choices": []}
    # An unflagged result is returned at once.
    assert await fb.call(ok) == {"choices": ["x"]}


async def test_placement_outside_retry_falls_back_once_retries_are_exhausted() -> None:
    primary, alt = Calls(StatusCodeError(503)), Calls("alt")
    p = Pipeline(Fallback(alt), Retry(3, backoff=backoff.constant(0)))
    assert await p.call(primary) == "alt"
    assert (primary.n, alt.n) == (3, 1)


async def test_placement_inside_retry_falls_back_per_attempt() -> None:
    primary, alt = Calls(StatusCodeError(503)), Calls(StatusCodeError(502))
    p = Pipeline(Retry(3, backoff=backoff.constant(0)), Fallback(alt))
    with pytest.raises(StatusCodeError):
        await p.call(primary)
    assert (primary.n, alt.n) == (3, 3)  # each attempt: the primary, then its fallback


async def test_the_primarys_open_breaker_keeps_calls_off_it() -> None:
    store = MemoryStore()
    breaker = CircuitBreaker(2, 60, 60, store=store, name="primary")
    primary, alt = Calls(StatusCodeError(503)), Calls("alt")
    p = Pipeline(Fallback(alt), breaker)
    for _ in range(10):
        assert await p.call(primary) == "alt"
    assert primary.n == 2  # the breaker opened after 2 failures: no call reached it since
    assert alt.n == 10


async def test_each_alternative_may_carry_its_own_pipeline() -> None:
    store = MemoryStore()
    secondary = Calls(StatusCodeError(500))
    guarded = Pipeline(CircuitBreaker(1, 60, 60, store=store, name="secondary"))(secondary)
    degraded = Calls("degraded")
    p = Pipeline(Fallback([guarded, degraded]), CircuitBreaker(1, 60, 60, store=store, name="p"))
    primary = Calls(StatusCodeError(503))
    for _ in range(5):
        assert await p.call(primary) == "degraded"
    assert (primary.n, secondary.n, degraded.n) == (1, 1, 5)


async def test_a_limiter_refusal_falls_back() -> None:
    lim = SlidingWindowLimiter(1, 60, store=MemoryStore(), name="q", timeout=0)
    primary, alt = Calls("primary"), Calls("alt")
    p = Pipeline(Fallback(alt), lim)
    assert await p.call(primary) == "primary"
    assert await p.call(primary) == "alt"  # RateLimited: the wait would exceed the timeout


async def test_as_a_decorator() -> None:
    alt = Calls("alt")

    @Fallback(alt)
    async def fetch(x: int) -> str:
        raise StatusCodeError(503)

    assert await fetch(7) == "alt"
    assert alt.args == [((7,), {})]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alternative": lambda: None}, TypeError, "alternative must be an async callable"),
        ({"alternative": []}, ValueError, "alternative must not be empty"),
        ({"alternative": [Calls(), print]}, TypeError, r"alternative\[1\] must be an async"),
        ({"alternative": Calls(), "on": 3}, TypeError, "on must be an exception type"),
        ({"alternative": Calls(), "on": ()}, TypeError, "on must be"),
        ({"alternative": Calls(), "on": asyncio.CancelledError}, ValueError, "on must not"),
        ({"alternative": Calls(), "on_result": 1}, TypeError, "on_result must be a predicate"),
        ({"alternative": Calls(), "name": ""}, ValueError, "name must not be empty"),
    ],
)
def test_options_are_checked_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Fallback(**kwargs)
