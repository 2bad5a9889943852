"""The operator tools in one process (memory store, fakeredis), the registry writes of the
policies, and the ``resilience`` command against a real Redis (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import fakeredis
import pytest

from resilience import (
    CircuitBreaker,
    CircuitOpen,
    ConcurrencyLimit,
    FallbackStore,
    MemoryStore,
    RateLimited,
    RedisStore,
    RetryBudget,
    SlidingWindowLimiter,
    admin,
)
from resilience.admin._render import render_status
from resilience.errors import StoreUnavailable
from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent


async def _ok(x: str = "") -> str:
    return x


async def test_status_and_actions_on_a_memory_store() -> None:
    store = MemoryStore()
    lim = SlidingWindowLimiter(10, 60, store=store, name="api", key=lambda t: t)
    br = CircuitBreaker(3, 30, 10, store=store, name="up")
    budget = RetryBudget(store=store, name="rb")
    for t in ("a", "b", "a"):
        await lim.call(_ok, t)
    await br.call(_ok)
    await budget.withdraw()
    await asyncio.sleep(0.05)  # the registry's background batch
    st = await admin.status(store)
    (ls,) = st.limiters
    assert (ls.name, ls.limit, ls.window) == ("api", 10, 60.0)
    assert sorted((k.key, k.used) for k in ls.keys) == [("a", 2), ("b", 1)]
    assert [(b.name, b.keys[0].state) for b in st.breakers] == [("up", "closed")]
    assert [b.name for b in st.budgets] == ["rb"]
    assert st.budgets[0].retries == 1
    assert st.processes == ()

    await admin.breaker_open(store, "up", for_=5, who="me@here")
    with pytest.raises(CircuitOpen):
        await br.call(_ok)
    await admin.breaker_close(store, "up", who="me@here")
    assert await br.call(_ok, "x") == "x"

    await admin.pause(store, "api", for_=5, who="me@here")
    await asyncio.sleep(0.01)  # pushed to the limiter on the loop
    with pytest.raises(RateLimited):
        await lim.acquire("never-seen", timeout=0.1)
    assert not (await lim.try_acquire("c")).allowed
    await admin.resume(store, "api", who="me@here")
    await asyncio.sleep(0.01)
    assert (await lim.try_acquire("c")).allowed

    await admin.reset(store, "api", key="a", who="me@here")
    (ls,) = (await admin.status(store)).limiters
    assert dict((k.key, k.used) for k in ls.keys)["a"] == 0
    log = await admin.audit(store)
    assert [e.action for e in log] == [
        "reset",
        "resume",
        "pause",
        "breaker close",
        "breaker open",
    ]
    assert {e.who for e in log} == {"me@here"}
    with pytest.raises(LookupError, match="no limiter named 'nope'"):
        await admin.pause(store, "nope", for_=1)
    with pytest.raises(ValueError, match="for_"):
        await admin.pause(store, "api", for_=0)


async def test_status_shows_learned_limits_and_concurrency() -> None:
    store = MemoryStore()
    lim = SlidingWindowLimiter(100, 60, store=store, name="rpm")
    cc = ConcurrencyLimit(3, store=store, name="slots")

    class Answer:
        status_code = 200
        headers: ClassVar[dict[str, str]] = {
            "x-ratelimit-limit-requests": "40",
            "x-ratelimit-remaining-requests": "39",
        }

    async def answer() -> Answer:
        return Answer()

    await lim.call(answer)
    release = asyncio.Event()

    async def hold() -> None:
        async with cc.acquire():
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(4)]
    await asyncio.sleep(1.2)  # registrations after the first batch: at most one per second
    st = await admin.status(store)
    (ls,) = st.limiters
    assert [(k.key, k.used, k.learned) for k in ls.keys] == [("", 1, 40)]
    (cs,) = st.concurrency
    assert (cs.name, cs.in_flight, cs.waiting) == ("slots", 3, 1)
    assert "LEARNED" in render_status(st)
    release.set()
    await asyncio.gather(*holders)


async def test_a_held_call_waits_for_the_end_of_the_hold_within_its_bound() -> None:
    store = MemoryStore()
    lim = SlidingWindowLimiter(10, 60, store=store, name="api")
    await lim.call(_ok)
    await store.registry_hold("api", 300_000)
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await lim.acquire(timeout=1.0)
    assert loop.time() - t0 >= 0.25


class Counting(FallbackStore):
    """Counts the primary's registry writes and decisions."""

    def __init__(self, primary: Any) -> None:
        super().__init__(primary)
        self.counts: Counter[str] = Counter()

    async def registry_put(self, *args: Any) -> None:
        self.counts["registry_put"] += 1
        await super().registry_put(*args)

    async def window_acquire(self, *args: Any, **kwargs: Any) -> Any:
        self.counts["window_acquire"] += 1
        return await super().window_acquire(*args, **kwargs)


async def test_registration_adds_no_round_trip_per_call() -> None:
    store = Counting(RedisStore(fakeredis.FakeAsyncRedis(), prefix="reg"))
    lim = SlidingWindowLimiter(1000, 60, store=store, name="api", key=lambda t: t)
    for i in range(200):
        await lim.call(_ok, f"t{i % 5}")
    await asyncio.sleep(1.3)  # batches: at once, then at most once a second
    assert store.counts["window_acquire"] == 200
    assert store.counts["registry_put"] == 2  # the name with "t0", then the 4 other keys
    (e,) = await store.registry_list()
    assert sorted(e.keys) == [f"t{i}" for i in range(5)]
    await store.aclose()


async def test_a_registry_that_cannot_be_written_never_fails_a_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(MemoryStore):
        async def registry_put(self, *args: Any) -> None:
            raise StoreUnavailable("down")

    store = Broken()
    lim = SlidingWindowLimiter(10, 60, store=store, name="api")
    for _ in range(3):
        assert await lim.call(_ok, "x") == "x"
    await asyncio.sleep(0.05)
    assert [r.message for r in caplog.records if "could not register" in r.message] != []


def _cli(*args: str, url: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESILIENCE_REDIS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "resilience", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        input=stdin,
        timeout=60,
    )


async def test_the_command_line(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    try:
        lim = SlidingWindowLimiter(5, 60, store=store, name="api", key=lambda t: t)
        await lim.call(_ok, "acme")
        await asyncio.sleep(0.1)
        url = redis_server.url
        out = _cli("status", "--prefix", prefix, url=url)
        assert out.returncode == 0, out.stderr
        assert "api      acme  1/5" in out.stdout
        out = _cli("pause", "api", "--for", "30", "--prefix", prefix, url=url, stdin="")
        assert out.returncode == 1
        assert "pass --yes" in out.stderr
        assert await store.registry_holds() == {}
        out = _cli("pause", "api", "--for", "30", "--yes", "--prefix", prefix, url=url)
        assert out.returncode == 0, out.stderr
        assert "pause 'api' (every key, 1 known) for 30s: done" in out.stdout
        st = json.loads(_cli("status", "--json", "--prefix", prefix, url=url).stdout)
        assert 20 < st["limiters"][0]["held_for"] <= 30  # a CLI start-up each, on a busy machine
        out = _cli("resume", "api", "--who", "ops@ci", "--json", "--prefix", prefix, url=url)
        assert json.loads(out.stdout)["who"] == "ops@ci"
        out = _cli("pause", "nope", "--for", "1", "--yes", "--prefix", prefix, url=url)
        assert out.returncode == 1
        assert "no limiter named 'nope'" in out.stderr
        out = _cli("audit", "--prefix", prefix, url=url)
        assert out.stdout.splitlines()[1].split()[2:4] == ["ops@ci", "resume"]
        out = _cli("pause", "api", "--for", "-1", url=url)
        assert out.returncode == 2
    finally:
        await store.aclose()
