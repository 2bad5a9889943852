"""Fallback and hedging against local fake upstreams (aiohttp servers on loopback).

Run: ``.venv/bin/python benchmarks/fallback.py [--outage 10] [--calls 1000]``

**1. The primary fails hard.** A primary upstream answers 200 (10 ms), except during an
outage of ``--outage`` seconds (starting 1 s in) when it answers every request 503 at once; a
secondary upstream always answers 200 (20 ms). Three fleets of 8 workers run side by side, for
``1 + outage + 2`` seconds, each job one call, each fleet against its own primary:

- ``no fallback``: ``Pipeline(Retry(2), breaker)``: jobs are lost during the outage;
- ``fallback, no breaker``: ``Pipeline(Fallback(secondary), Retry(2))``: no job lost, but every
  job still hits the failing primary twice;
- ``fallback + breaker``: ``Pipeline(Fallback(secondary), Retry(2), breaker)``: no job lost,
  and the open breaker keeps calls off the primary (probes only) until it recovers.

**2. A slow tail.** An upstream answers in 10-30 ms, except 5 % of requests that take 2 s.
``--calls`` GETs (16 concurrent) without and with ``Hedge(after=0.1, safe=True)``: p50, p99,
max latency, and the extra requests hedging cost (hedges started / calls, from the server's
own count).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resilience import (
    CircuitBreaker,
    Fallback,
    Hedge,
    MemoryStore,
    Pipeline,
    Retry,
    backoff,
)


class HTTPError(Exception):
    """An error status, in aiohttp's shape (``status``): classified by resilience.http."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers: dict[str, str] = {}


@dataclass
class Server:
    """A local upstream: counts requests per second of the run, answers as ``handler`` says."""

    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    t0: float = 0.0
    hits: list[float] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> Server:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.hits.append(time.monotonic() - self.t0)
            return await self.handler(request)

        app = web.Application()
        app.router.add_get("/", counted)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as r:
        if r.status >= 400:
            raise HTTPError(r.status)
        return await r.text()


# ------------------------------------------------------------------ 1. the primary fails hard


@dataclass
class Fleet:
    name: str
    pipeline: Pipeline
    primary: Server
    done: int = 0
    lost: int = 0
    served_by: dict[str, int] = field(default_factory=dict)


async def fallback_story(outage: float, workers: int = 8) -> None:
    start_at, tail = 1.0, 2.0
    t0 = time.monotonic()

    def primary_handler() -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            now = time.monotonic() - t0
            if start_at <= now < start_at + outage:
                return web.Response(status=503)
            await asyncio.sleep(0.01)
            return web.Response(text="primary")

        return handle

    async def secondary_handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.02)
        return web.Response(text="secondary")

    secondary = await Server(secondary_handler, t0).start()
    primaries = [await Server(primary_handler(), t0).start() for _ in range(3)]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    store = MemoryStore()

    def retry() -> Retry:
        return Retry(2, backoff=backoff.exponential(initial=0.05, max=0.2))

    def breaker(name: str) -> CircuitBreaker:
        return CircuitBreaker(5, 5.0, 1.0, store=store, name=name, max_break_duration=2.0)

    async def to_secondary(url: str) -> str:
        return await get(session, secondary.url)

    fleets = [
        Fleet("no fallback", Pipeline(retry(), breaker("a"), name="job"), primaries[0]),
        Fleet(
            "fallback, no breaker",
            Pipeline(Fallback(to_secondary), retry(), name="job"),
            primaries[1],
        ),
        Fleet(
            "fallback + breaker",
            Pipeline(Fallback(to_secondary), retry(), breaker("c"), name="job"),
            primaries[2],
        ),
    ]
    stop = t0 + start_at + outage + tail

    async def to_primary(url: str) -> str:
        return await get(session, url)

    async def worker(fleet: Fleet) -> None:
        call = fleet.pipeline(to_primary)
        while time.monotonic() < stop:
            try:
                who = await call(fleet.primary.url)
                fleet.done += 1
                fleet.served_by[who] = fleet.served_by.get(who, 0) + 1
            except Exception:
                fleet.lost += 1
            await asyncio.sleep(0.05)

    await asyncio.gather(*(worker(f) for f in fleets for _ in range(workers)))
    await session.close()
    for s in (*primaries, secondary):
        await s.stop()

    print(
        f"1. Primary answers 503 to everything for {outage:g} s "
        f"(t = {start_at:g} .. {start_at + outage:g} s); {workers} workers per fleet"
    )
    print(
        f"{'fleet':<22} {'jobs':>6} {'lost':>6} {'by primary':>11} {'by secondary':>13} "
        f"{'primary hits in outage':>23} {'per s':>7}"
    )
    for f in fleets:
        hits = [h for h in f.primary.hits if start_at <= h < start_at + outage]
        print(
            f"{f.name:<22} {f.done + f.lost:>6} {f.lost:>6} {f.served_by.get('primary', 0):>11} "
            f"{f.served_by.get('secondary', 0):>13} {len(hits):>23} {len(hits) / outage:>7.1f}"
        )
    print()


# ------------------------------------------------------------------ 2. a slow tail


async def hedge_story(calls: int, concurrency: int = 16, after: float = 0.1) -> None:
    rng = random.Random(18)

    async def slow_tail(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2.0 if rng.random() < 0.05 else rng.uniform(0.01, 0.03))
        return web.Response(text="ok")

    server = await Server(slow_tail, time.monotonic()).start()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def fetch(url: str) -> str:
        return await get(session, url)

    async def measure(fn: Callable[[str], Awaitable[Any]]) -> tuple[list[float], int]:
        before = len(server.hits)
        latencies: list[float] = []
        todo = iter(range(calls))

        async def loop() -> None:
            for _ in todo:
                t = time.perf_counter()
                await fn(server.url)
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return sorted(latencies), len(server.hits) - before

    plain, plain_requests = await measure(fetch)
    hedged_fn = Hedge(after, safe=True)(fetch)
    hedged, hedged_requests = await measure(hedged_fn)
    await session.close()
    await server.stop()

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(
        f"2. Slow tail: 5 % of requests take 2 s, the rest 10-30 ms; {calls} GETs, "
        f"{concurrency} concurrent; Hedge(after={after:g}, safe=True)"
    )
    print(f"{'':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'requests':>9} {'extra':>7}")
    for name, xs, n in (("no hedge", plain, plain_requests), ("hedged", hedged, hedged_requests)):
        print(
            f"{name:<10} {statistics.median(xs) * 1e3:>8.1f} {pct(xs, 0.99) * 1e3:>8.1f} "
            f"{xs[-1] * 1e3:>8.1f} {n:>9} {(n - calls) / calls:>7.1%}"
        )
    print(f"p99 cut: {pct(plain, 0.99) / pct(hedged, 0.99):.1f} x")


async def main(outage: float, calls: int) -> None:
    await fallback_story(outage)
    await hedge_story(calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the primary fails")
    parser.add_argument("--calls", type=int, default=1000, help="calls per hedging row")
    args = parser.parse_args()
    logging.getLogger("resilience").setLevel(logging.ERROR)  # the lost jobs' retry warnings
    asyncio.run(main(args.outage, args.calls))
