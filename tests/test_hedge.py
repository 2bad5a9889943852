"""Hedge: when a hedge starts, who wins, what is cancelled and awaited, and when a call is
never hedged (not idempotent, unless the caller says it is safe)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from resilience import CircuitOpen, Hedge, Pipeline, Retry, backoff


class StatusCodeError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code
        self.response = type("R", (), {"headers": {}})()


class Upstream:
    """Each call takes the next of ``plan`` (seconds to sleep, then a result or an exception);
    records starts, and the ``finally`` of every call that ended (cancelled or not)."""

    def __init__(self, *plan: tuple[float, object]) -> None:
        self.plan = list(plan)
        self.started = 0
        self.cleaned: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        n = self.started
        self.started += 1
        delay, outcome = self.plan[min(n, len(self.plan) - 1)]
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        finally:
            self.cleaned.append(n)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome if outcome is not None else n


async def test_a_fast_call_is_never_hedged() -> None:
    up = Upstream((0, "first"))
    assert await Hedge(0.05, safe=True).call(up) == "first"
    await asyncio.sleep(0.08)
    assert up.started == 1


async def test_a_slow_first_attempt_is_hedged_and_the_loser_is_cancelled_and_awaited() -> None:
    up = Upstream((10, "slow"), (0, "hedge"))
    assert await Hedge(0.01, safe=True).call(up) == "hedge"
    assert up.started == 2
    assert up.cancelled == [0]
    assert 0 in up.cleaned  # the loser's finally ran before the call returned


async def test_the_first_attempt_may_still_win_and_the_hedge_is_cancelled() -> None:
    up = Upstream((0.05, "first"), (10, "hedge"))
    assert await Hedge(0.01, safe=True).call(up) == "first"
    assert up.cancelled == [1]
    assert sorted(up.cleaned) == [0, 1]


async def test_at_most_max_hedges_extra_attempts() -> None:
    up = Upstream((10, None), (10, None), (10, None), (0, "late"))
    task = asyncio.ensure_future(Hedge(0.01, max_hedges=2, safe=True).call(up))
    await asyncio.sleep(0.15)
    assert up.started == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(up.cancelled) == [0, 1, 2]  # every attempt cancelled and awaited


async def test_a_matched_failure_starts_the_next_hedge_at_once() -> None:
    up = Upstream((0, StatusCodeError(503)), (0, "hedge"))
    assert await Hedge(60, safe=True).call(up) == "hedge"  # no 60 s wait


async def test_a_matched_failure_lets_the_race_go_on() -> None:
    # The hedge fails (503) while the first attempt is still running: the first one decides.
    up = Upstream((0.1, "first"), (0, StatusCodeError(503)))
    assert await Hedge(0.01, safe=True).call(up) == "first"


async def test_any_other_failure_ends_the_race() -> None:
    bad = StatusCodeError(400)
    up = Upstream((10, "slow"), (0, bad))
    with pytest.raises(StatusCodeError) as info:
        await Hedge(0.01, safe=True).call(up)
    assert info.value is bad
    assert up.cancelled == [0]


async def test_when_every_attempt_fails_the_last_failure_propagates_with_a_note() -> None:
    up = Upstream((0.02, StatusCodeError(503)), (0.05, CircuitOpen("b", 1)))
    with pytest.raises(CircuitOpen) as info:
        await Hedge(0.01, safe=True, name="h").call(up)
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "h: every attempt of" in note
    assert "status 503" in note


async def test_an_alternative_serves_the_hedges_in_turn() -> None:
    primary = Upstream((10, "primary"))
    second, third = Upstream((10, "second")), Upstream((0, "third"))
    h = Hedge(0.01, max_hedges=2, alternative=[second, third], safe=True)
    assert await h.call(primary, "prompt") == "third"
    assert (primary.started, second.started, third.started) == (1, 1, 1)
    assert primary.cancelled == [0]
    assert second.cancelled == [0]


async def test_after_may_be_a_callable_of_the_hedge_number() -> None:
    seen: list[int] = []

    def after(n: int) -> float:
        seen.append(n)
        return 0.01

    up = Upstream((10, None), (10, None), (0, "third"))
    assert await Hedge(after, max_hedges=2, safe=True).call(up) == "third"
    assert seen[:2] == [1, 2]

    with pytest.raises(ValueError, match="after returned -1 for hedge 1"):
        await Hedge(lambda n: -1, safe=True).call(Upstream((10, None)))


async def test_a_plain_call_is_not_hedged_unless_the_caller_says_it_is_safe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    up = Upstream((0.05, "first"), (0, "hedge"))
    h = Hedge(0.001)
    with caplog.at_level(logging.WARNING, "resilience"):
        assert await h.call(up) == "first"
        assert await h.call(Upstream((0.02, "again"))) == "again"
    assert up.started == 1
    warnings = [r for r in caplog.records if "not known to be safe" in r.getMessage()]
    assert len(warnings) == 1  # once per policy
    assert await Hedge(0.001, safe=False).call(Upstream((0.02, "x"), (0, "y"))) == "x"

    by_args = Hedge(0.001, safe=lambda prompt, **kw: kw.get("idempotent", False))
    assert await by_args.call(Upstream((0.05, "a"), (0, "b")), "p", idempotent=True) == "b"
    assert await by_args.call(Upstream((0.05, "a"), (0, "b")), "p") == "a"


class Request:
    """The shape of an httpx/aiohttp request as the integrations pass it."""

    def __init__(self, method: str, headers: dict[str, str] | None = None) -> None:
        self.method = method
        self.headers = headers or {}


@pytest.mark.parametrize(
    ("request_", "hedged"),
    [
        (Request("GET"), True),
        (Request("PUT"), True),
        (Request("POST"), False),
        (Request("POST", {"Idempotency-Key": "k1"}), True),
        (Request("PATCH"), False),
    ],
    ids=["GET", "PUT", "POST", "POST+Idempotency-Key", "PATCH"],
)
async def test_an_http_request_is_hedged_only_when_idempotent(
    request_: Request, hedged: bool
) -> None:
    up = Upstream((0.05, "first"), (0, "hedge"))
    assert await Hedge(0.001).call(up, request_) == ("hedge" if hedged else "first")
    # safe=True is the caller's word, whatever the method.
    if not hedged:
        up2 = Upstream((0.05, "first"), (0, "hedge"))
        assert await Hedge(0.001, safe=True).call(up2, request_) == "hedge"


async def test_a_cancelled_caller_cancels_and_awaits_every_attempt() -> None:
    up = Upstream((10, None), (10, None))
    task = asyncio.ensure_future(Hedge(0.005, safe=True).call(up))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(up.cleaned) == [0, 1]


async def test_with_retry_outside_each_attempt_is_hedged_and_the_deadline_bounds_all() -> None:
    up = Upstream((0, StatusCodeError(400)))
    p = Pipeline(Retry(3, backoff=backoff.constant(0)), Hedge(0.01, safe=True))
    with pytest.raises(StatusCodeError):
        await p.call(up)
    assert up.started == 1  # a 400 is neither hedged again nor retried

    slow = Upstream((10, None))
    bounded = Pipeline(Retry(1, deadline=0.1), Hedge(0.01, max_hedges=3, safe=True))
    with pytest.raises(TimeoutError):
        await bounded.call(slow)
    assert slow.started == 4
    assert sorted(slow.cancelled) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"after": -1}, ValueError, "after must be a number of seconds"),
        ({"after": "1"}, TypeError, "after must be a number of seconds"),
        ({"after": 1, "max_hedges": 0}, ValueError, "max_hedges must be > 0"),
        ({"after": 1, "max_hedges": 1.5}, TypeError, "max_hedges must be an int"),
        ({"after": 1, "alternative": print}, TypeError, "alternative must be an async"),
        ({"after": 1, "alternative": []}, ValueError, "alternative must not be empty"),
        ({"after": 1, "safe": "yes"}, TypeError, "safe must be None, a bool"),
        ({"after": 1, "on": 3}, TypeError, "on must be an exception type"),
        ({"after": 1, "name": 3}, TypeError, "name must be a str"),
    ],
)
def test_options_are_checked_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Hedge(**kwargs)
