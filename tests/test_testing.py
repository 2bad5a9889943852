"""resilience.testing: the test-mode switch, FakeClock, the fakeredis-backed store."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from resilience import (
    MemoryStore,
    Pipeline,
    RateLimited,
    RedisStore,
    Retry,
    RetryBudget,
    SlidingWindowLimiter,
    backoff,
    testing,
)


@pytest.fixture(autouse=True)
def _restore_mode() -> Iterator[None]:
    yield
    testing.set_testing(False)


class Failing:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("down")
        return "ok"


async def test_test_mode_skips_sleeps_and_caps_attempts() -> None:
    slow = Retry(10, backoff=backoff.constant(30.0))
    testing.set_testing(True, attempts=3)
    assert testing.is_testing()
    fn = Failing(2)
    t0 = time.monotonic()
    assert await slow.call(fn) == "ok"  # 2 x 30 s of backoff skipped
    assert time.monotonic() - t0 < 0.5
    fn = Failing(5)
    with pytest.raises(ConnectionError):
        await slow.call(fn)
    assert fn.calls == 3  # capped at 3 although the policy allows 10


async def test_default_test_mode_means_no_retries_and_off_restores() -> None:
    testing.set_testing(True)
    fn = Failing(1)
    with pytest.raises(ConnectionError):
        await Retry(5, backoff=backoff.constant(0)).call(fn)
    assert fn.calls == 1
    testing.set_testing(False)
    assert not testing.is_testing()
    fn = Failing(1)
    assert await Retry(5, backoff=backoff.constant(0)).call(fn) == "ok"
    assert fn.calls == 2


async def test_cap_never_raises_a_policy_limit() -> None:
    testing.set_testing(True, attempts=10)
    fn = Failing(5)
    with pytest.raises(ConnectionError):
        await Retry(2, backoff=backoff.constant(1.0)).call(fn)
    assert fn.calls == 2


async def test_testing_mode_context_manager_nests_and_restores() -> None:
    assert not testing.is_testing()
    with testing.testing_mode(attempts=2):
        assert testing.is_testing()
        with testing.testing_mode(attempts=1):
            fn = Failing(1)
            with pytest.raises(ConnectionError):
                await Retry(5, backoff=backoff.constant(60)).call(fn)
        fn = Failing(1)
        assert await Retry(5, backoff=backoff.constant(60)).call(fn) == "ok"
    assert not testing.is_testing()


def test_set_testing_validates_attempts() -> None:
    with pytest.raises(ValueError, match="attempts"):
        testing.set_testing(True, attempts=0)
    with pytest.raises(TypeError, match="attempts"):
        testing.set_testing(True, attempts="3")  # type: ignore[arg-type]


async def test_fake_clock_drives_a_memory_store() -> None:
    clock = testing.FakeClock(100.0)
    lim = SlidingWindowLimiter(2, 60.0, store=MemoryStore(clock=clock), guard=0)
    assert (await lim.try_acquire()).allowed
    assert (await lim.try_acquire()).allowed
    d = await lim.try_acquire()
    assert not d.allowed
    assert d.retry_after == pytest.approx(60.0)
    clock.advance(60.0)
    assert (await lim.try_acquire()).allowed
    assert clock() == 160.0
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(-1)


async def test_fake_redis_store_runs_the_real_scripts() -> None:
    import fakeredis

    server = fakeredis.FakeServer()
    a = testing.fake_redis_store(server=server, prefix="app")
    b = testing.fake_redis_store(server=server, prefix="app")
    assert isinstance(a, RedisStore)
    try:
        # two "workers" share one limit through the fake server
        lim_a = SlidingWindowLimiter(3, 60.0, store=a, guard=0, name="q")
        lim_b = SlidingWindowLimiter(3, 60.0, store=b, guard=0, name="q")
        got = [
            (await lim_a.try_acquire()).allowed,
            (await lim_b.try_acquire()).allowed,
            (await lim_a.try_acquire()).allowed,
            (await lim_b.try_acquire()).allowed,
        ]
        assert got == [True, True, True, False]
        # and one retry budget
        budget_a = RetryBudget(0, 0.2, store=a, name="b")  # floor: 2 retries per window
        budget_b = RetryBudget(0, 0.2, store=b, name="b")
        assert [
            await budget_a.withdraw(),
            await budget_b.withdraw(),
            await budget_a.withdraw(),
        ] == [True, True, False]
        # a retry through the exhausted shared limit is refused in time, not hung
        lim_t = SlidingWindowLimiter(3, 60.0, store=b, guard=0, name="q", timeout=0.05)
        fn = Failing(1)
        with pytest.raises(RateLimited):
            await Pipeline(Retry(3, backoff=backoff.constant(0)), lim_t).call(fn)
        assert fn.calls == 0
    finally:
        await a.aclose()
        await b.aclose()


def test_fake_redis_store_without_fakeredis_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    with pytest.raises(ImportError, match=r"pip install 'resilience\[fakeredis\]'"):
        testing.fake_redis_store()


def test_import_resilience_does_not_import_testing_or_fakeredis() -> None:
    code = (
        "import sys, resilience; "
        "print('resilience.testing' in sys.modules, 'fakeredis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out == ["False", "False"]
