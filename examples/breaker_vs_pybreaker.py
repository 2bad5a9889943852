"""Side by side: resilience.CircuitBreaker and pybreaker with CircuitRedisStorage, shared by a
fleet of processes through one Redis (research CB-14).

Run: ``.venv/bin/python examples/breaker_vs_pybreaker.py [--processes 4]``

Starts a throwaway redis-server on a free loopback port. For each breaker, with the same
settings (open after 10 failures, stay open 1 s, then let one trial call through):

1. **Trip.** 20 calls fail at once, spread over the processes. Counted: the "opened"
   notifications the processes' listeners received (a transition should happen, and be
   reported, once).
2. **After the break.** The upstream is still down; 100 callers (spread over the processes)
   arrive together. Counted: how many reached the upstream (probes) before the breaker
   refused the rest.

pybreaker is used as its documentation shows (a sync function, one thread per caller);
ours as an async decorator (one task per caller).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BREAK = 1.0
THRESHOLD = 10


class Down(Exception):
    """The upstream is down."""


def pybreaker_worker(
    url: str, n: list[int], ready: Any, phase_go: Any, hits: Any, done: Any, out: Any
) -> None:
    import pybreaker
    import redis

    opened = 0

    class Count(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            nonlocal opened
            if new.name == "open":
                opened += 1

    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, redis.Redis.from_url(url), namespace="cmp"
    )
    cb = pybreaker.CircuitBreaker(
        fail_max=THRESHOLD, reset_timeout=BREAK, state_storage=storage, listeners=[Count()]
    )

    def upstream() -> None:
        with hits.get_lock():
            hits.value += 1
        time.sleep(0.05)
        raise Down()

    def caller() -> None:
        with contextlib.suppress(Down, pybreaker.CircuitBreakerError):
            cb.call(upstream)

    storage.state  # noqa: B018 - connect before the race
    ready.wait()
    seen = []
    for go, count in zip(phase_go, n, strict=True):
        go.wait()
        threads = [threading.Thread(target=caller) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen.append(opened)
        done.put(1)
    out.put(seen)


def ours_worker(
    url: str, n: list[int], ready: Any, phase_go: Any, hits: Any, done: Any, out: Any
) -> None:
    from resilience import CircuitBreaker, CircuitOpen, RedisStore

    async def main() -> list[int]:
        store = RedisStore.from_url(url, prefix="cmp", timeout=2.0)
        opened = 0

        def count(change: Any) -> None:
            nonlocal opened
            if change.new == "open":
                opened += 1

        cb = CircuitBreaker(
            THRESHOLD, 60, BREAK, store=store, half_open_max_calls=1, listeners=[count]
        )

        @cb
        async def upstream() -> None:
            with hits.get_lock():
                hits.value += 1
            await asyncio.sleep(0.05)
            raise Down()

        async def caller() -> None:
            with contextlib.suppress(Down, CircuitOpen):
                await upstream()

        await cb.state()  # connect before the race
        await asyncio.to_thread(ready.wait)
        seen = []
        for go, count_ in zip(phase_go, n, strict=True):
            await asyncio.to_thread(go.wait)
            await asyncio.gather(*[caller() for _ in range(count_)])
            seen.append(opened)
            done.put(1)
        await store.aclose()
        return seen

    out.put(asyncio.run(main()))


def run(kind: str, url: str, processes: int) -> tuple[int, int, int, int]:
    ctx = mp.get_context("spawn")
    out, done = ctx.Queue(), ctx.Queue()
    hits = ctx.Value("i", 0)
    ready = ctx.Barrier(processes + 1)
    phases = [ctx.Event(), ctx.Event()]
    split = [
        [20 // processes + (i < 20 % processes) for i in range(processes)],
        [100 // processes + (i < 100 % processes) for i in range(processes)],
    ]
    target = pybreaker_worker if kind == "pybreaker" else ours_worker
    procs = [
        ctx.Process(
            target=target,
            args=(url, [split[0][i], split[1][i]], ready, phases, hits, done, out),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    ready.wait(timeout=60)  # every process has started and connected
    phases[0].set()
    for _ in procs:
        done.get(timeout=60)  # the 20 failures are over
    trip_hits = hits.value
    time.sleep(BREAK + 0.2)  # the break is over
    with hits.get_lock():
        hits.value = 0
    phases[1].set()
    for _ in procs:
        done.get(timeout=60)
    seen = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    trips = sum(s[0] for s in seen)
    reopens = sum(s[1] - s[0] for s in seen)
    return trips, trip_hits, hits.value, reopens


def main() -> None:
    from tests.redis_servers import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    rows = []
    for kind in ("pybreaker", "resilience"):
        with RedisServer() as server:
            rows.append((kind, *run(kind, server.url, args.processes)))
    print(
        f"{args.processes} processes, one Redis; threshold {THRESHOLD}, break {BREAK:g} s, "
        "1 trial call"
    )
    print(
        f"{'breaker':<12} {'trip events':>12} {'failures sent':>14} "
        f"{'probes after break':>19} {'reopen events':>14}"
    )
    for kind, trips, trip_hits, probes, reopens in rows:
        print(f"{kind:<12} {trips:>12} {trip_hits:>14} {probes:>19} {reopens:>14}")
    print(
        "trip events: 'opened' notifications fleet-wide for the 20 concurrent failures; "
        "failures sent: how many of them reached the upstream;\nprobes: of 100 callers "
        "after the break, how many reached the still-down upstream; reopen events: "
        "'opened' notifications for those probes."
    )


if __name__ == "__main__":
    main()
