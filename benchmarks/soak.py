"""Chaos soak: 4 processes through Retry + CircuitBreaker + SlidingWindowLimiter (RedisStore,
fallback "local") against a strict local upstream while Redis is killed, paused and restarted.

Run: ``.venv/bin/python benchmarks/soak.py [--seconds 60] [--processes 4]``

Schedule (fractions of ``--seconds``): healthy, Redis killed (SIGKILL), restarted on the same
port (empty: no persistence), paused (SIGSTOP), resumed. Reports, per phase: admissions by our
limiter in the busiest rolling window against the quota (healthy: must not exceed it; Redis
down: must not exceed the sum of the fair shares), upstream 429s, decision latency
percentiles, and overall jobs lost (must be 0) and RSS of each worker at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUOTA = 40  # requests per WINDOW, the upstream's and ours
WINDOW = 2.0
TASKS = 8  # concurrent jobs per process
STORE_TIMEOUT = 0.25


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(redis_url: str, upstream_url: str, seconds: float, out: Any, idx: int) -> None:
    asyncio.run(_worker(redis_url, upstream_url, seconds, out, idx))


async def _worker(redis_url: str, upstream_url: str, seconds: float, out: Any, idx: int) -> None:
    import aiohttp

    from resilience import (
        CircuitBreaker,
        Pipeline,
        RedisStore,
        Retry,
        Retryable,
        SlidingWindowLimiter,
    )
    from resilience.stores.base import WindowResult

    class TooMany(Retryable):
        def __init__(self, retry_after: float) -> None:
            super().__init__(f"429, retry after {retry_after}")
            self.retry_after = retry_after

    class Unavailable(Retryable):
        pass

    rss_start = _rss_mb()
    store = RedisStore.from_url(redis_url, prefix="soak", timeout=STORE_TIMEOUT)
    limiter = SlidingWindowLimiter(QUOTA, WINDOW, store=store, name="api")
    fs = limiter.store
    decisions: list[tuple[float, float, bool]] = []  # (wall time, seconds, local)
    admissions: list[tuple[float, bool]] = []  # (slot wall time, decided locally)
    inner = fs.window_acquire

    async def timed(*args: Any) -> WindowResult:
        before = fs.stats["window_acquire"]  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        r = await inner(*args)
        dt = time.perf_counter() - t0
        now = time.time()
        local = fs.stats["window_acquire"] > before  # type: ignore[attr-defined]
        decisions.append((now, dt, local))
        if r.allowed:
            admissions.append((now + r.wait_us / 1e6, local))
        return r

    fs.window_acquire = timed  # type: ignore[method-assign, assignment]
    breaker = CircuitBreaker(10, 10.0, 2.0, store=store, name="api")
    pipe = Pipeline(Retry(attempts=20, deadline=30.0), breaker, limiter)
    jobs = {"done": 0, "lost": 0, "429": 0}
    errors: list[str] = []
    end = time.monotonic() + seconds

    async with aiohttp.ClientSession() as session:

        async def call() -> None:
            async with session.get(upstream_url + "/v1/analyze") as resp:
                await resp.read()
                if resp.status == 429:
                    jobs["429"] += 1
                    raise TooMany(float(resp.headers.get("Retry-After", "1")))
                if resp.status >= 500:
                    raise Unavailable(str(resp.status))

        async def loop() -> None:
            while time.monotonic() < end:
                try:
                    await pipe.call(call)
                    jobs["done"] += 1
                except Exception as exc:
                    jobs["lost"] += 1
                    if len(errors) < 5:
                        errors.append(repr(exc))

        await asyncio.gather(*(loop() for _ in range(TASKS)))
    await store.aclose()
    out.put((idx, decisions, admissions, jobs, errors, rss_start, _rss_mb()))


def _max_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    best = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--processes", type=int, default=4)
    args = ap.parse_args()
    from resilience.demo.upstream import start_upstream
    from tests.redis_servers import RedisServer

    server = RedisServer().start()
    url, stop_upstream = await start_upstream(limit=QUOTA, window=WINDOW)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    warmup = 3.0  # spawn + imports
    total = args.seconds
    procs = [
        ctx.Process(target=worker, args=(server.url, url, total + warmup, out, i))
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()
    await asyncio.sleep(warmup)
    s = total
    # (name, start fraction, action at start)
    plan = [
        ("healthy", 0.0, None),
        ("killed", 0.2, "kill"),
        ("restarted", 0.35, "start"),
        ("paused", 0.55, "stop"),
        ("resumed", 0.7, "cont"),
    ]
    t0 = time.time()
    phases: list[tuple[str, float]] = []
    for name, frac, action in plan:
        await asyncio.sleep(max(0.0, t0 + frac * s - time.time()))
        if action == "kill":
            server.kill()
        elif action == "start":
            server.start()
        elif action == "stop":
            server.signal(signal.SIGSTOP)
        elif action == "cont":
            server.signal(signal.SIGCONT)
        phases.append((name, time.time()))
    results = []
    loop = asyncio.get_running_loop()
    for _ in procs:
        results.append(await loop.run_in_executor(None, out.get, True, total + 120))
    for p in procs:
        p.join(timeout=10)
    stats = await stop_upstream()
    server.stop()
    bounds = [*(t for _, t in phases[1:]), float("inf")]
    n = args.processes
    print(
        f"chaos soak: {n} processes x {TASKS} tasks, quota {QUOTA}/{WINDOW:g}s, "
        f"{total:g}s, store timeout {STORE_TIMEOUT}s"
    )
    print(
        f"{'phase':<10} {'secs':>5} {'decisions':>9} {'local':>6} {'shared/win':>10} "
        f"{'local/win/proc':>14} {'share':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    last = max(d[0] for r in results for d in r[1])
    for (name, start), end in zip(phases, bounds, strict=True):
        ds = [d for r in results for d in r[1] if start <= d[0] < end]
        shared = [a for r in results for a, loc in r[2] if start <= a < end and not loc]
        per_proc = max(
            _max_in_window([a for a, loc in r[2] if start <= a < end and loc], WINDOW)
            for r in results
        )
        local = sum(1 for d in ds if d[2])
        lat = [d[1] * 1000 for d in ds]
        span = min(end, last) - start
        print(
            f"{name:<10} {span:>5.1f} {len(ds):>9} {local:>6} "
            f"{_max_in_window(shared, WINDOW - 0.05):>10} {per_proc:>14} {QUOTA // n:>5} "
            f"{_pct(lat, 50):>7.2f} {_pct(lat, 99):>7.2f} {max(lat, default=float('nan')):>7.2f}"
        )
    done = sum(r[3]["done"] for r in results)
    lost = sum(r[3]["lost"] for r in results)
    t429 = sum(r[3]["429"] for r in results)
    print(f"jobs done {done}, jobs lost {lost}, upstream 429s {t429}")
    print(f"upstream: {stats}")
    for idx, _d, _a, _j, errors, rss0, rss1 in sorted(results):
        tail = f"; {errors}" if errors else ""
        print(f"worker {idx}: RSS {rss0:.1f} MB -> {rss1:.1f} MB{tail}")


if __name__ == "__main__":
    asyncio.run(main())
