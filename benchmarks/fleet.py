"""Fleet: decisions per second across processes, against one redis-server (or a 3-master cluster).

Run from the repository root (about 15 s per process count; needs redis-server on PATH)::

    .venv/bin/python benchmarks/fleet.py [--procs 1,2,4] [--seconds 3] [--tasks 16]
    .venv/bin/python benchmarks/fleet.py --cluster [--keys 1,64]

It starts its own throwaway redis-server on a free loopback port (no persistence) and, for each
process count N, runs the contenders one after the other (interleaved per N): N spawned worker
processes x ``--tasks`` asyncio tasks, each task deciding in a loop for ``--seconds``, all on one
key, with a limit far above the load (every decision admits and writes):

- ``raw EVALSHA``: a trivial script (``return 1``) through redis-py with ``socket_timeout=None``
  (the setting ``RedisStore.from_url`` uses; see benchmarks/limiter.py): the floor
  of any one-script decision;
- ``ours``: ``SlidingWindowLimiter.acquire`` on ``RedisStore.from_url`` (limit 10**7 per 1 s:
  above ``MERGE_ABOVE``, so admissions share their slot's entry, see docs/ratelimit.md);
- ``ours entry each``: the same with merging off (one entry per admission, as for limits up
  to ``MERGE_ABOVE``);
- ``ours leased``: the same with ``lease=64`` (leased permits, see docs/ratelimit.md);
- ``limits``: the ``limits`` library's async moving window (redis-py), one EVALSHA per hit.

Reported per cell: decisions/s (all processes), p50/p99 latency of one decision, Redis CPU %
(``INFO cpu`` user + sys delta over the run's wall time), Redis µs per decision (``INFO
commandstats``: the EVALSHA usec of the run, which includes the commands the scripts call,
divided by the decisions made) and memory per key at the end of the run (``MEMORY USAGE`` of the
contender's Redis keys, divided by the limiter keys it used: for ours the logs, metas, presence and
registry keys; the log holds the last window's entries).

``--memory``: memory per key at full use of 10**6 per minute: each contender (``ours``,
``ours entry each``) runs ``--procs`` processes x ``--tasks`` tasks calling ``acquire(timeout=0.5)``
for ``--seconds`` (70 or more: a whole window and then some), and reports the units in the
window, the log's entries and ``MEMORY USAGE`` of the key's log and meta.

``--cluster``: the same for ``ours`` (and raw) on a 3-master test cluster, with 1 key vs
``--keys`` keys spread over the slots (each task picks its key round-robin). It also reports
the busiest master's script µs per decision: one master runs on one core, so ``10**6`` over it
is the fleet's ceiling in decisions/s, the figure that grows with the masters when the clients
(not Redis) bound the measured rate, as on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.redis_servers import RedisCluster, RedisServer

LIMIT = 10**7  # per 1 s: far above the load
LEASE = 64
CONTENDERS = ("raw EVALSHA", "ours", "ours entry each", "ours leased", "limits")
SPAWN = multiprocessing.get_context("spawn")

Decide = Callable[[int], Awaitable[object]]


# ----------------------------------------------------------------------------- workers


async def _make(
    name: str, url: str, cluster: bool, nkeys: int, limit: int = LIMIT, window: float = 1.0
) -> tuple[Decide, Any]:
    keys = [f"k{i}" for i in range(nkeys)]
    if name == "raw EVALSHA":
        if cluster:
            from redis.asyncio.cluster import RedisCluster as Cluster

            cc: Any = Cluster.from_url(url, socket_timeout=None)
        else:
            cc = aioredis.Redis.from_url(url, socket_timeout=None)
        sha = await cc.script_load("return 1")
        rkeys = [f"raw:{{{k}}}" for k in keys]

        async def raw(i: int) -> object:
            return await cc.evalsha(sha, 1, rkeys[i % nkeys])

        return raw, cc
    if name.startswith("ours"):
        from resilience import RateLimited, RedisStore, SlidingWindowLimiter

        store = RedisStore.from_url(url, prefix="ours", timeout=5.0, cluster=cluster)
        lim = SlidingWindowLimiter(
            limit, window, store=store, name="bench", lease=LEASE if "leased" in name else None
        )
        if name == "ours entry each":
            lim._merge = False  # as for a limit up to MERGE_ABOVE
        if limit != LIMIT:  # --memory: full use, a bounded wait

            async def full(i: int) -> object:
                try:
                    return await lim.acquire(keys[i % nkeys], timeout=0.5)
                except RateLimited:
                    return None

            return full, store

        async def ours(i: int) -> object:
            return await lim.acquire(keys[i % nkeys])

        return ours, store
    from limits import RateLimitItemPerSecond
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    storage = RedisStorage(
        f"async+redis://127.0.0.1:{url.rsplit(':', 1)[1]}",
        implementation="redispy",
        key_prefix="limits",
    )
    moving = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(LIMIT, 1)

    async def hit(i: int) -> object:
        return await moving.hit(item, keys[i % nkeys])

    return hit, storage


def worker(
    name: str, url: str, cluster: bool, nkeys: int, tasks: int, seconds: float, ready: Any,
    go: Any, out: Any, limit: int = LIMIT, window: float = 1.0,
) -> None:  # fmt: skip
    out.put(asyncio.run(_work(name, url, cluster, nkeys, tasks, seconds, ready, go, limit, window)))


async def _work(
    name: str, url: str, cluster: bool, nkeys: int, tasks: int, seconds: float, ready: Any,
    go: Any, limit: int, window: float,
) -> tuple[int, float, list[float]]:  # fmt: skip
    decide, closable = await _make(name, url, cluster, nkeys, limit, window)
    for i in range(50):  # warm up: connections, script cache
        await decide(i)
    ready.put(os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, go.wait)  # all start together
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    clock = time.perf_counter

    async def loop(i: int) -> None:
        while (t := clock()) < stop:
            await decide(i)
            lat.append(clock() - t)
            i += tasks

    t0 = clock()
    await asyncio.gather(*[loop(i) for i in range(tasks)])
    elapsed = clock() - t0
    if hasattr(closable, "aclose"):
        await closable.aclose()
    step = max(1, len(lat) // 20_000)
    return len(lat), elapsed, lat[::step]


# ------------------------------------------------------------------------------ driver


def _every_node(admin: Any) -> dict[str, Any]:
    """On a cluster client, address every master (a command goes to a random node otherwise)."""
    masters = getattr(admin, "PRIMARIES", None)
    return {} if masters is None else {"target_nodes": masters}


async def _cpu(admin: Any) -> float:
    info = await admin.info("cpu", **_every_node(admin))
    if "used_cpu_user" not in info:  # a cluster client: {node: info}
        return sum(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in info.values())
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _evalsha_usec(admin: Any) -> tuple[float, float]:
    """The run's script usec over every node, and on the busiest node (a cluster's master)."""
    stats = await admin.info("commandstats", **_every_node(admin))
    nodes = stats.values() if "cmdstat_info" not in stats else [stats]
    total = busiest = 0.0
    for s in nodes:
        node = sum(float(s[cmd]["usec"]) for cmd in ("cmdstat_evalsha", "cmdstat_eval") if cmd in s)
        total += node
        busiest = max(busiest, node)
    return total, busiest


async def _memory(admin: Any, name: str) -> int:
    """``MEMORY USAGE`` of every Redis key of the contender (for ours: logs, metas, presence and
    registry), summed."""
    pattern = {"raw EVALSHA": "raw:*", "limits": "limits*"}.get(name, "ours*")
    total = 0
    async for k in admin.scan_iter(match=pattern, count=1000):
        total += int(await admin.memory_usage(k, samples=0) or 0)
    return total


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def run_cell(
    admin: Any, url: str, name: str, procs: int, tasks: int, seconds: float, cluster: bool,
    nkeys: int, limit: int = LIMIT, window: float = 1.0,
) -> dict[str, float]:  # fmt: skip
    await admin.flushall(**_every_node(admin))
    ready, out, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    ps = [
        SPAWN.Process(
            target=worker,
            args=(name, url, cluster, nkeys, tasks, seconds, ready, go, out, limit, window),
        )
        for _ in range(procs)
    ]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=60)
    await admin.config_resetstat(**_every_node(admin))
    cpu0, t0 = await _cpu(admin), time.perf_counter()
    go.set()
    results = [out.get(timeout=seconds + 60) for _ in ps]
    wall = time.perf_counter() - t0
    cpu1, (usec, busiest) = await _cpu(admin), await _evalsha_usec(admin)
    mem = await _memory(admin, name)
    for p in ps:
        p.join(30)
    count = sum(r[0] for r in results)
    lat = [x for r in results for x in r[2]]
    rate = sum(r[0] / r[1] for r in results)
    return {
        "rate": rate,
        "p50": _pct(lat, 0.5) * 1e3,
        "p99": _pct(lat, 0.99) * 1e3,
        "cpu": 100 * (cpu1 - cpu0) / wall,
        "us": usec / max(count, 1),
        "busiest": busiest / max(count, 1),
        "mem": mem / nkeys,  # per limiter key, all its Redis keys included
    }


def _row(label: str, n: str, c: dict[str, float]) -> str:
    return (
        f"| {label} | {n} | {c['rate']:,.0f} | {c['p50']:.2f} | {c['p99']:.2f} | "
        f"{c['cpu']:.0f} % | {c['us']:.2f} | {c['mem']:,.0f} |"
    )


HEADER = (
    "| contender | processes | decisions/s | p50 ms | p99 ms | Redis CPU | Redis µs/decision "
    "| memory/key B |\n|---|---:|---:|---:|---:|---:|---:|---:|"
)


async def _log_state(admin: Any) -> tuple[int, int, int]:
    """(units in the window, entries, MEMORY USAGE of log + meta) of ours' one key."""
    from resilience.stores.redis._keys import window_keys

    z, m = window_keys("ours", "bench", "k0")
    t = await admin.time()
    now = t[0] * 1_000_000 + t[1]
    live = int(await admin.zcount(z, now - 61_000_000, "+inf"))  # (window + guard <= 61 s)
    x = await admin.hget(m, "x")
    units = live + int(x or 0)  # x: the extra weight of the entries (see window_acquire.lua)
    size = sum([int(await admin.memory_usage(k, samples=0) or 0) for k in (z, m)])
    return units, int(await admin.zcard(z)), size


async def memory(args: argparse.Namespace) -> None:
    """``--memory``: full use of 10**6 per minute, merged vs one entry per admission."""
    server = RedisServer().start()
    admin = aioredis.Redis.from_url(server.url, socket_timeout=None)  # MEMORY USAGE of 10**6
    n = int(args.procs.split(",")[-1])
    try:
        v = (await admin.info("server"))["redis_version"]
        print(
            f"redis-server {v}; {os.cpu_count()} CPUs; {n} processes x {args.tasks} tasks, "
            f"acquire(timeout=0.5) for {args.seconds}s; limit 1,000,000 per 60 s\n"
        )
        print("| contender | decisions/s | units in the window | entries | MEMORY USAGE B |")
        print("|---|---:|---:|---:|---:|")
        for name in ("ours", "ours entry each"):
            c = await run_cell(
                admin, server.url, name, n, args.tasks, args.seconds, False, 1, 10**6, 60.0
            )
            units, entries, size = await _log_state(admin)
            print(f"| {name} | {c['rate']:,.0f} | {units:,} | {entries:,} | {size:,} |", flush=True)
    finally:
        await admin.aclose()
        server.stop()


async def main(args: argparse.Namespace) -> None:
    if args.memory:
        await memory(args)
        return
    procs = [int(x) for x in args.procs.split(",")]
    cluster_nodes: RedisCluster | None = None
    server: RedisServer | None = None
    if args.cluster:
        cluster_nodes = RedisCluster(masters=3).start()
        url = cluster_nodes.url
        from redis.asyncio.cluster import RedisCluster as Cluster

        admin: Any = Cluster.from_url(url)
        names: tuple[str, ...] = ("raw EVALSHA", "ours", "ours leased")
        keysets = [int(k) for k in args.keys.split(",")]
    else:
        server = RedisServer().start()
        url = server.url
        admin = aioredis.Redis.from_url(url)
        names = CONTENDERS
        keysets = [1]
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    try:
        v = (await aioredis.Redis.from_url(url).info("server"))["redis_version"]
        print(
            f"redis-server {v} on loopback{' (3-master cluster)' if args.cluster else ''}; "
            f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; {args.tasks} tasks per "
            f"process, {args.seconds}s per cell\n"
        )
        print(HEADER.replace("| processes |", "| processes x keys |") if args.cluster else HEADER)
        for n in procs:
            for nk in keysets:
                for name in names:  # interleaved per N: drift does not turn into ratios
                    c = await run_cell(
                        admin, url, name, n, args.tasks, args.seconds, args.cluster, nk
                    )
                    results[(name, n, nk)] = c
                    label = f"{n} x {nk}" if args.cluster else str(n)
                    print(_row(name, label, c), flush=True)
        print()
        for n in procs:
            for nk in keysets:
                raw = results[("raw EVALSHA", n, nk)]["us"]
                ratios = ", ".join(
                    f"{name} {results[(name, n, nk)]['us'] / max(raw, 1e-9):.2f}x"
                    for name in names
                    if name != "raw EVALSHA"
                )
                print(f"N={n} keys={nk}: Redis µs per decision / raw EVALSHA's: {ratios}")
        if args.cluster:
            # One master is one core: the fleet's ceiling is set by the busiest master's share.
            print("\nbusiest master's script µs per decision -> ceiling (10^6 / it) decisions/s:")
            for (name, n, nk), c in results.items():
                b = c["busiest"]
                print(f"  {name}, {n} x {nk} keys: {b:.2f} µs -> {1e6 / max(b, 1e-9):,.0f}/s")
        if args.plot and not args.cluster:
            plot(results, procs, names, args.plot)
    finally:
        await admin.aclose()
        if server is not None:
            server.stop()
        if cluster_nodes is not None:
            cluster_nodes.stop()


def plot(
    results: dict[tuple[str, int, int], dict[str, float]],
    procs: list[int],
    names: tuple[str, ...],
    path: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in names:
        ax.plot(procs, [results[(name, n, 1)]["rate"] for n in procs], marker="o", label=name)
    ax.set_xlabel("worker processes (16 asyncio tasks each)")
    ax.set_ylabel("decisions / s (one key, one redis-server)")
    ax.set_xticks(procs)
    ax.set_ylim(bottom=0)
    ax.set_title(f"Fleet throughput on {os.cpu_count()} cores")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", default=f"1,2{',4' if (os.cpu_count() or 1) >= 4 else ''}")
    ap.add_argument("--seconds", type=float, default=3.0, help="measurement time per cell")
    ap.add_argument("--tasks", type=int, default=16, help="asyncio tasks per process")
    ap.add_argument("--cluster", action="store_true", help="3-master cluster, 1 vs many keys")
    ap.add_argument("--keys", default="1,64", help="with --cluster: key counts")
    ap.add_argument("--plot", default="", help="save a plot of decisions/s against N here")
    ap.add_argument("--memory", action="store_true", help="memory at full use of 10**6/min")
    asyncio.run(main(ap.parse_args()))
