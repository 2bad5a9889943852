"""The latency guard: 429s and goodput against a strict upstream, for several guard values.

Run from the repository root (about two minutes; needs redis-server on PATH)::

    .venv/bin/python benchmarks/guard.py [--seconds 8] [--rounds 2]

Setup (issue 2, semantics 10): a strict upstream (``resilience.demo.upstream``: an exact
sliding window of 100 requests per 2 s on the upstream's *own* clock, 429 beyond it), one
throwaway redis-server, and 4 worker processes x 25 tasks that each loop "``acquire`` a permit
from a shared ``SlidingWindowLimiter(100, 2.0, guard=g)``, then call the upstream". The limiter
is exact on Redis's clock; what the upstream sees is shifted by the time between our decision
and the request's arrival (event-loop scheduling, the HTTP client, the network). For each guard
``g`` the script prints the fraction of requests answered 429 and the goodput (admitted
requests / what the quota allows over the run).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GUARDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
LIMIT, WINDOW = 100, 2.0
PROCESSES, TASKS = 4, 25


def worker(
    redis_url: str, api: str, prefix: str, guard: float, start_at: float, seconds: float, out: Any
) -> None:
    import aiohttp

    from resilience import RedisStore, SlidingWindowLimiter

    async def main() -> tuple[int, int]:
        store = RedisStore.from_url(redis_url, prefix=prefix, timeout=2.0)
        lim = SlidingWindowLimiter(
            LIMIT, WINDOW, store=store, name="api", guard=guard, fallback="deny"
        )
        ok = limited = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=TASKS)) as session:
            # Open every connection before the run (GET /stats costs no quota): a cold TCP
            # connect on the first burst would count as decision-to-arrival latency.
            base = api.rsplit("/v1/", 1)[0]

            async def warm() -> None:
                async with session.get(base + "/stats") as resp:
                    await resp.read()

            await asyncio.gather(*[warm() for _ in range(TASKS)])
            await asyncio.sleep(max(0.0, start_at - time.time()))
            stop = time.monotonic() + seconds

            async def task() -> None:
                nonlocal ok, limited
                while True:
                    left = stop - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        await lim.acquire(timeout=left)
                    except Exception:  # RateLimited: the next slot lies beyond the run
                        return
                    async with session.post(api) as resp:
                        await resp.read()
                        if resp.status == 429:
                            limited += 1
                        else:
                            ok += 1

            await asyncio.gather(*[task() for _ in range(TASKS)])
        await store.aclose()
        return ok, limited

    out.put(asyncio.run(main()))


async def one_run(redis_url: str, guard: float, seconds: float, tag: str) -> dict[str, float]:
    from resilience.demo.upstream import ANALYZE_PATH, start_upstream

    url, stop = await start_upstream(limit=LIMIT, window=WINDOW)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # after every worker has imported and connected
    procs = [
        ctx.Process(
            target=worker,
            args=(redis_url, url + ANALYZE_PATH, f"g{tag}", guard, start_at, seconds, out),
        )
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        while True:
            try:
                results.append(out.get_nowait())
                break
            except Exception:
                await asyncio.sleep(0.05)  # keep serving the upstream meanwhile
    for p in procs:
        p.join(10)
    st = await stop()
    return {
        "requests": st.requests,
        "429": st.rejected_429,
        "frac_429": st.rejected_429 / st.requests if st.requests else 0.0,
        "goodput": st.goodput,
        "max_in_window": st.max_in_window,
    }


async def main(seconds: float, rounds: int, guards: tuple[float, ...]) -> None:
    from tests.redis_servers import RedisServer

    server = RedisServer().start()
    redis_url = server.url
    try:
        print(
            f"strict upstream {LIMIT} per {WINDOW:g} s; {PROCESSES} processes x {TASKS} tasks;"
            f" {seconds:g} s per run; {rounds} round(s); {os.cpu_count()} CPUs\n"
        )
        print(
            f"{'guard (s)':>10}{'requests':>10}{'429s':>8}{'429 %':>8}{'goodput':>9}"
            f"{'  per round (429s / goodput)'}"
        )
        for g in guards:
            runs = [await one_run(redis_url, g, seconds, f"{g}-{r}") for r in range(rounds)]
            req = sum(r["requests"] for r in runs)
            n429 = sum(r["429"] for r in runs)
            good = sum(r["goodput"] for r in runs) / len(runs)
            detail = ", ".join(f"{int(r['429'])} / {r['goodput']:.0%}" for r in runs)
            print(
                f"{g:10.2f}{req:10.0f}{n429:8.0f}{n429 / req:8.1%}{good:9.0%}  {detail}", flush=True
            )
    finally:
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=2, help="runs per guard value")
    ap.add_argument("--guards", type=str, default=",".join(map(str, GUARDS)))
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rounds, tuple(float(x) for x in a.guards.split(","))))
