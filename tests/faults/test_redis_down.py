"""Redis killed, paused, or a call cancelled mid-flight: policies keep deciding, within bounds.

RL-17 (scripts reloaded), RL-18 (timeout + 50 ms), RL-20 (cancellation).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from resilience import RateLimited, RedisStore, SlidingWindowLimiter, StoreUnavailable
from resilience.stores import FallbackStore
from resilience.stores.redis._health import PROBE_MAX, StoreHealth, health_of
from tests.faults._bounds import CANCEL_ALLOWANCE, until_healthy
from tests.faults._workers import limiter_worker
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.redis

T = TypeVar("T")
TIMEOUT = 0.25
# The bound: a decision is never slower than the store's timeout + 50 ms (looser on
# redis-py 5: tests/faults/_bounds.py).
BOUND = TIMEOUT + CANCEL_ALLOWANCE


# ---------------------------------------------------------------- the health state machine


async def call(h: StoreHealth, fn: Callable[[], Awaitable[T]]) -> T:
    """One call under ``h``'s protocol, as the store runs it (minus the deadline)."""
    probe = h.enter()
    try:
        result = await fn()
    except StoreUnavailable as exc:
        raise h.failed(exc, probe) from exc.__cause__
    h.succeeded()
    return result


async def test_health_fails_fast_then_probes_with_backoff() -> None:
    now = [0.0]
    h = StoreHealth("s", 1.0, clock=lambda: now[0], probe_min=0.1, probe_max=0.8)
    calls = []

    async def down() -> None:
        calls.append(now[0])
        raise StoreUnavailable("x") from ConnectionError("refused")

    async def up() -> str:
        calls.append(now[0])
        return "ok"

    with pytest.raises(StoreUnavailable):
        await call(h, down)
    assert h.degraded
    assert len(calls) == 1
    # Before the probe time: fail fast, Redis untouched.
    with pytest.raises(StoreUnavailable, match="degraded"):
        await call(h, up)
    assert len(calls) == 1
    # Probe delays grow (jittered in [d/2, d]) and stay capped.
    delays = []
    for _ in range(8):
        start = now[0]
        while True:
            now[0] += 0.01
            try:
                await call(h, down)
            except StoreUnavailable as exc:
                if "degraded" in str(exc):
                    continue
            break
        delays.append(now[0] - start)
    assert all(d <= 0.8 + 0.011 for d in delays)
    assert max(delays[-3:]) >= 0.4 - 0.011  # reached the cap's range
    assert delays[0] <= 0.2 + 0.011
    # A successful probe ends degraded mode.
    now[0] += 1.0
    assert await call(h, up) == "ok"
    assert not h.degraded


async def test_errors_unrelated_to_availability_do_not_degrade() -> None:
    from redis.exceptions import ResponseError

    h = StoreHealth("s", 1.0)

    async def bad() -> None:
        raise StoreUnavailable("script error") from ResponseError("ERR wrong number of args")

    with pytest.raises(StoreUnavailable):
        await call(h, bad)
    assert not h.degraded


def test_reply_errors_and_outages_are_told_apart() -> None:
    from redis.exceptions import MovedError, NoPermissionError, ResponseError

    from resilience.stores.redis._errors import is_outage, is_reply_error

    for outage in (
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "NOREPLICAS Not enough good replicas to write.",
        "LOADING Redis is loading the dataset in memory",
        # Redis 6 wraps an error raised by redis.call inside a script:
        "ERR Error running script (call to f_0123): @user_script:12: -OOM command not allowed",
    ):
        assert is_outage(ResponseError(outage)), outage
        assert not is_reply_error(ResponseError(outage)), outage
    for reply in (
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR Error running script (call to f_0123): @user_script:3: attempt to compare nil",
    ):
        assert is_reply_error(ResponseError(reply)), reply
    assert is_reply_error(NoPermissionError("this user has no permissions to run 'evalsha'"))
    assert not is_reply_error(MovedError("3999 127.0.0.1:6381"))  # a topology change


def test_a_timeout_while_redis_answers_others_is_not_an_outage() -> None:
    h = StoreHealth("s", 0.5)
    since = h.oks
    h.succeeded()  # another call was answered meanwhile: slow, not down
    h.timed_out(False, since, 0.3)
    h.queue_timed_out(since, 8)
    assert not h.degraded
    since = h.oks
    h.timed_out(False, since)  # nobody answered since this call started: an outage
    assert h.degraded


# ---------------------------------------------------------------- one process, real server


async def test_kill_then_restart_same_port(
    fresh_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 under load: no exception escapes; local decisions; shared again after restart,
    within one probe interval, with scripts reloaded transparently (NOSCRIPT)."""
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=TIMEOUT)
    lim = SlidingWindowLimiter(1000, 1.0, store=store, name="k", guard=0)
    fs = lim.store
    assert isinstance(fs, FallbackStore)
    for _ in range(5):
        assert (await lim.try_acquire()).allowed
    stop = asyncio.Event()
    escaped: list[BaseException] = []
    latencies: list[float] = []

    async def load() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                await lim.try_acquire()
            except BaseException as exc:
                escaped.append(exc)
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.002)

    tasks = [asyncio.create_task(load()) for _ in range(8)]
    await asyncio.sleep(0.2)
    fresh_redis_server.kill()
    await asyncio.sleep(1.0)
    assert health_of(store).degraded
    local_before = fs.stats["window_acquire"]
    assert local_before > 0
    fresh_redis_server.start()
    restarted = time.monotonic()
    while health_of(store).degraded and time.monotonic() - restarted < 10:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    recovered = time.monotonic() - restarted
    stop.set()
    await asyncio.gather(*tasks)
    await store.aclose()
    assert escaped == []
    # One probe interval (capped at PROBE_MAX, plus one timeout for the probe itself).
    assert recovered <= PROBE_MAX + TIMEOUT + 0.2, recovered
    assert max(latencies) <= BOUND, max(latencies)
    messages = [r.getMessage() for r in caplog.records if r.name == "resilience"]
    assert any("degraded mode" in m for m in messages)
    assert any("answers again" in m for m in messages)


async def test_scripts_reloaded_after_script_flush(redis_server: RedisServer, prefix: str) -> None:
    """RL-17: SCRIPT FLUSH (what a restart or failover does to the script cache)."""
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=1.0)
    lim = SlidingWindowLimiter(5, 10.0, store=store, name="f", guard=0)
    assert (await lim.try_acquire()).allowed
    client = aioredis.Redis.from_url(redis_server.url)
    await client.script_flush()
    assert (await lim.try_acquire()).allowed
    assert (await lim.try_acquire()).remaining == 2
    await client.aclose()
    await store.aclose()
    assert not health_of(store).degraded


async def _paused_run(server: RedisServer, prefix: str) -> tuple[list[float], list[object]]:
    """One run of RL-18: 20 decisions in flight when Redis is paused, then 50 sequential."""
    store = RedisStore.from_url(server.url, prefix=prefix, timeout=TIMEOUT)
    lim = SlidingWindowLimiter(100, 1.0, store=store, name="p", guard=0)
    assert (await lim.try_acquire()).allowed
    server.signal(signal.SIGSTOP)
    try:
        latencies: list[float] = []
        outcomes: list[object] = []

        async def one() -> None:
            t0 = time.monotonic()
            try:
                outcomes.append((await lim.acquire(timeout=0)).allowed)
            except RateLimited as exc:
                outcomes.append(exc)
            latencies.append(time.monotonic() - t0)

        # 20 concurrent (all in flight when Redis hangs), then 50 sequential (fail fast).
        await asyncio.gather(*(one() for _ in range(20)))
        for _ in range(50):
            await one()
    finally:
        server.signal(signal.SIGCONT)
    await until_healthy(store, lim)  # shared decisions resume
    await store.aclose()
    return latencies, outcomes


async def test_paused_redis_every_decision_bounded(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    """RL-18: SIGSTOP; every decision (in flight or new) returns within timeout + 50 ms and a
    decision is still made (local share); after SIGCONT shared decisions resume.

    The bound is on the library's scheduling, and a loaded 2-core machine can deschedule the
    process for longer than 50 ms: a run over it gets one more run; two fail the test."""
    runs = [await _paused_run(fresh_redis_server, prefix)]
    latencies = runs[0][0]
    if max(latencies) > BOUND or sorted(latencies[20:])[-3] >= 0.05:
        runs.append(await _paused_run(fresh_redis_server, prefix + ":again"))
    for latencies, outcomes in runs:  # every run decided every call
        assert len(latencies) == 70
        assert all(o is True or isinstance(o, RateLimited) for o in outcomes)
    latencies = runs[-1][0]
    first = sorted(runs[0][0])[-3:]
    assert max(latencies) <= BOUND, (first, sorted(latencies)[-5:])
    # Sequential calls after degradation did not wait for Redis at all.
    assert sorted(latencies[20:])[-3] < 0.05


async def test_debug_sleep_bounded_and_deny_mode(prefix: str) -> None:
    """A hanging Redis (DEBUG SLEEP) with fallback "deny": StoreUnavailable, within the bound."""
    with RedisServer(extra=["--enable-debug-command", "yes"]) as server:
        await _debug_sleep(server, prefix)


async def _debug_sleep(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=TIMEOUT)
    lim = SlidingWindowLimiter(10, 1.0, store=store, name="d", guard=0, fallback="deny")
    assert (await lim.try_acquire()).allowed
    admin = aioredis.Redis.from_url(redis_server.url)
    took: list[float] = []
    for _ in range(2):  # a second run if a loaded machine descheduled the first past BOUND
        sleeper = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "0.8"))  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await lim.try_acquire()
        took.append(time.monotonic() - t0)
        await sleeper
        if took[-1] <= BOUND:
            break
        await until_healthy(store, lim)
    assert took[-1] <= BOUND, took
    await admin.aclose()
    await store.aclose()


async def test_allow_mode_admits_and_counts(prefix: str) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix=prefix, timeout=TIMEOUT)
    lim = SlidingWindowLimiter(1, 60.0, store=store, name="a", fallback="allow")
    for _ in range(5):
        assert (await lim.try_acquire()).allowed
    fs = lim.store
    assert isinstance(fs, FallbackStore)
    assert fs.stats["window_acquire"] == 5
    await store.aclose()


async def test_cancel_mid_call_leaves_pool_healthy(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    """RL-20: a task cancelled while its EVALSHA is in flight (by its caller, or by the store's
    own deadline); the next commands on the single pooled connection get their own replies,
    and the cancelled admission is not left in the log (its slot is released)."""
    store = RedisStore.from_url(
        fresh_redis_server.url, prefix=prefix, timeout=1.0, max_connections=1
    )
    lim = SlidingWindowLimiter(100, 10.0, store=store, name="c", guard=0)
    client = store.client
    await client.set(f"{prefix}:probe", "mine")
    for _ in range(3):
        assert (await lim.try_acquire()).allowed
        fresh_redis_server.signal(signal.SIGSTOP)
        task = asyncio.create_task(lim.try_acquire())
        await asyncio.sleep(0.05)  # the EVALSHA is written, its reply not yet read
        task.cancel()
        await asyncio.sleep(0.02)
        fresh_redis_server.signal(signal.SIGCONT)
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(5):
            assert await client.get(f"{prefix}:probe") == b"mine"
    # Three admissions kept, the three cancelled ones released: 97 left after this one.
    assert (await lim.try_acquire()).remaining == 100 - 4
    assert not health_of(store).degraded
    await store.aclose()


async def test_deadline_cancel_mid_read_leaves_pool_healthy(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    """The store's own deadline cancels a read in flight; the stale reply (delivered after
    SIGCONT) never reaches the next command on the single pooled connection."""
    store = RedisStore.from_url(
        fresh_redis_server.url, prefix=prefix, timeout=TIMEOUT, max_connections=1
    )
    client = store.client
    await client.set(f"{prefix}:probe", "mine")
    lim = SlidingWindowLimiter(100, 10.0, store=store, name="c2", guard=0, fallback="deny")
    assert (await lim.try_acquire()).allowed
    fresh_redis_server.signal(signal.SIGSTOP)
    with pytest.raises(StoreUnavailable):
        await lim.try_acquire()
    fresh_redis_server.signal(signal.SIGCONT)
    for _ in range(5):
        assert await client.get(f"{prefix}:probe") == b"mine"
    health_of(store).reset()
    d = await lim.try_acquire()
    assert d.allowed
    assert isinstance(d.remaining, int)
    await store.aclose()


# ---------------------------------------------------------------- many processes


def _max_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.slow
def test_fleet_local_share_while_redis_down(fresh_redis_server: RedisServer, prefix: str) -> None:
    """4 processes share limit 20 / 2 s; Redis is killed, then restarted on the same port.

    While healthy the fleet admits at most 20 per window; while Redis is down each process
    admits at most its share (20 // 4 = 5) per window; after the restart every process is back
    on shared state within one probe interval, and the fleet again admits at most 20.
    """
    limit, window, n = 20, 2.0, 4
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    out = ctx.Queue()
    ready = ctx.Queue()
    procs = [
        ctx.Process(
            target=limiter_worker,
            args=(fresh_redis_server.url, prefix, limit, window, stop, ready, out, i),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)  # every worker has made a shared decision
        time.sleep(1.5)  # healthy load: everyone announces itself (every 0.2 s)
        t_kill = time.time()
        fresh_redis_server.kill()
        time.sleep(3.0)
        t_restart = time.time()
        fresh_redis_server.start()
        time.sleep(PROBE_MAX + 3.0)
        stop.set()
        results = [out.get(timeout=30) for _ in procs]
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    recovered_at = []
    shared_after: list[float] = []
    healthy_before: list[float] = []
    for _idx, records, errors in results:
        assert errors == []
        assert records, "worker made no decision"
        # Latency: the strict per-decision bound is proven in one process (tests above); here
        # 4 processes share 2 busy cores, so CPU starvation can delay a loop: 99 % within the
        # bound, and no decision near a hang (a hang would be >= 1 s: the pool's own wait).
        lat = sorted(r[3] for r in records)
        assert lat[int(0.99 * (len(lat) - 1))] <= BOUND
        assert lat[-1] <= BOUND + 0.3
        # Everyone saw the whole fleet before the outage.
        seen = [r[4] for r in records if r[0] < t_kill and not r[2]]
        assert seen
        assert seen[-1] == n
        down = [r[0] for r in records if r[2] and r[1]]
        assert down, "no local admission during the outage"
        assert _max_in_window(down, window - 0.05) <= limit // n  # recording jitter, as below
        first_shared = min(r[0] for r in records if r[0] > t_restart and not r[2])
        recovered_at.append(first_shared)
        assert first_shared - t_restart <= PROBE_MAX + TIMEOUT + 0.5
        healthy_before += [r[0] for r in records if r[0] < t_kill and r[1] and not r[2]]
        shared_after += [r[0] for r in records if r[0] > t_restart and r[1] and not r[2]]
    # Wall-clock stamps lag Redis TIME by up to a few ms: check windows 50 ms shorter.
    assert _max_in_window(healthy_before, window - 0.05) <= limit
    assert _max_in_window(shared_after, window - 0.05) <= limit
    assert len(healthy_before) >= limit  # the quota was actually exercised


def _in_connect(t: asyncio.Task[object]) -> bool:
    """Whether ``t`` awaits inside redis-py's ``_connect`` (Task.get_stack stops at the top)."""
    coro: Any = t.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        if coro.cr_frame.f_code.co_name == "_connect":
            return True
        coro = getattr(coro, "cr_await", None)
    return False


async def test_paused_redis_loop_stall_while_connecting(
    fresh_redis_server: RedisServer, prefix: str
) -> None:
    """RL-18 under a loop stall (GC pause, CPU starvation) while decisions open connections to
    a paused server: the store's deadline and redis-py's connect timeout (the same timeout) come
    due in one loop iteration. Every decision still ends (falls back), none hangs."""
    store = RedisStore.from_url(fresh_redis_server.url, prefix=prefix, timeout=TIMEOUT)
    lim = SlidingWindowLimiter(100, 1.0, store=store, name="s", guard=0)
    assert (await lim.try_acquire()).allowed
    fresh_redis_server.signal(signal.SIGSTOP)
    try:
        tasks = [asyncio.ensure_future(lim.acquire(timeout=0)) for _ in range(20)]
        for _ in range(50):
            await asyncio.sleep(0)
            if any(_in_connect(t) for t in asyncio.all_tasks()):
                break
        assert any(_in_connect(t) for t in asyncio.all_tasks())
        time.sleep(TIMEOUT + 0.1)  # noqa: ASYNC251 - the stall
        _, pending = await asyncio.wait(tasks, timeout=TIMEOUT * 4)
        assert not pending, f"{len(pending)} of 20 decisions hang"
        for t in tasks:  # admitted (local share) or refused; never StoreUnavailable
            assert t.exception() is None or isinstance(t.exception(), RateLimited)
    finally:
        fresh_redis_server.signal(signal.SIGCONT)
    await store.aclose()
