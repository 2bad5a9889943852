"""Leased permits (``SlidingWindowLimiter(..., lease=k)``): exact across processes, nothing leaks.

The semantics are in ``resilience/policies/ratelimit/_lease.py``: a lease is one admission of
weight n in the shared log, handed to this process's callers for ``lease_horizon`` seconds, and
settled down to the permits used when the horizon ends.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilience import MemoryStore, RedisStore, SlidingWindowLimiter
from resilience.stores.redis._keys import window_keys
from tests import limiter_workers
from tests.eventually import eventually
from tests.redis_servers import RedisServer

SPAWN = multiprocessing.get_context("spawn")


def weighted_max_in_window(entries: list[tuple[int, int]], window_us: int) -> int:
    """The largest total weight of entries ``(at, weight)`` in any half-open (t - window, t]."""
    es = sorted(entries)
    best = total = i = 0
    for at, w in es:
        total += w
        while es[i][0] <= at - window_us:
            total -= es[i][1]
            i += 1
        best = max(best, total)
    return best


def test_weighted_max_in_window_helper() -> None:
    assert weighted_max_in_window([(0, 2), (10, 3), (20, 1)], 10) == 3
    assert weighted_max_in_window([(0, 2), (10, 3), (20, 1)], 11) == 5
    assert weighted_max_in_window([(5, 1), (5, 4)], 1) == 5


def _weight(member: str) -> int:
    return int(member.split(":")[1]) if ":" in member else 1


async def log_weight(client: aioredis.Redis, key: str) -> int:
    members: Any = await client.zrange(key, 0, -1)
    return sum(_weight(m.decode()) for m in members)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "exc", "param"),
    [
        ({"lease": 1}, ValueError, "lease"),
        ({"lease": 0}, ValueError, "lease"),
        ({"lease": True}, TypeError, "lease"),
        ({"lease": "8"}, TypeError, "lease"),
        ({"lease": 11}, ValueError, "lease"),  # above limit 10
        ({"lease_horizon": 0.1}, ValueError, "lease_horizon"),  # without lease
        ({"lease": 4, "lease_horizon": 0}, ValueError, "lease_horizon"),
        ({"lease": 4, "lease_horizon": -1.0}, ValueError, "lease_horizon"),
        ({"lease": 4, "lease_horizon": float("nan")}, ValueError, "lease_horizon"),
        ({"lease": 4, "lease_horizon": "0.1"}, TypeError, "lease_horizon"),
        ({"lease": 4, "lease_horizon": 2.0}, ValueError, "lease_horizon"),  # above window 1 s
    ],
)
def test_bad_lease_options_name_the_parameter(
    kwargs: dict[str, Any], exc: type[Exception], param: str
) -> None:
    with pytest.raises(exc, match=rf"^{param} "):
        SlidingWindowLimiter(10, 1.0, store=MemoryStore(), **kwargs)


def test_the_horizon_widens_the_slot() -> None:
    lim = SlidingWindowLimiter(10, 1.0, store=MemoryStore(), guard=0, lease=4, lease_horizon=0.1)
    assert lim.current_guard == pytest.approx(0.1)
    plain = SlidingWindowLimiter(10, 1.0, store=MemoryStore(), guard=0)
    assert plain.current_guard == 0
    assert plain._lease is None


# -------------------------------------------------------------------- one process, Redis


async def _burst(lim: SlidingWindowLimiter, n: int) -> int:
    got = await asyncio.gather(*[lim.acquire() for _ in range(n)])
    return sum(d.allowed for d in got)


async def test_concurrent_callers_share_one_lease(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    lim = SlidingWindowLimiter(
        1000, 5.0, store=redis_store, name="share", guard=0, lease=50, lease_horizon=0.3
    )
    await redis_client.config_resetstat()
    assert await _burst(lim, 40) == 40
    stats = (await redis_client.info("commandstats"))["cmdstat_evalsha"]
    # not 40 round trips: one lease (and a caller or two direct), plus the registry writes
    assert stats["calls"] <= 7


async def test_unused_permits_are_given_back_after_the_horizon(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    horizon = 0.3
    lim = SlidingWindowLimiter(
        1000, 5.0, store=redis_store, name="back", guard=0, lease=20, lease_horizon=horizon
    )
    log = window_keys(redis_store.prefix, "back", "")[0]
    used = await _burst(lim, 16)  # used up: the next lease doubles, up to 20
    used += await _burst(lim, 3)  # a lease of 20 for 2-3 callers
    held = await log_weight(redis_client, log)
    assert held > used  # the lease's unused permits are in the log ...
    await asyncio.sleep(horizon)

    async def given_back() -> bool:  # ... and given back at its horizon (window: 5 s)
        return await log_weight(redis_client, log) == used

    await eventually(given_back, timeout=2.0, what="the lease's unused permits given back")


async def test_cancelled_callers_leak_nothing(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    horizon = 0.2
    lim = SlidingWindowLimiter(
        200, 10.0, store=redis_store, name="cancel", guard=0, lease=16, lease_horizon=horizon
    )
    log = window_keys(redis_store.prefix, "cancel", "")[0]
    rng = random.Random(7)
    admitted = 0

    async def caller() -> None:
        nonlocal admitted
        await lim.acquire()
        admitted += 1  # no await between the grant and the count

    for _ in range(6):
        tasks = [asyncio.ensure_future(caller()) for _ in range(20)]
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        for t in tasks:  # callers waiting for a lease, or for the store, or already served
            if rng.random() < 0.7:
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert lim._lease is not None
    assert lim._lease._free
    await asyncio.sleep(horizon)

    # Every entry left in the log is a permit a caller got: cancelled waits gave theirs back
    # (the window is 10 s: nothing leaves it meanwhile).
    async def only_the_grants() -> bool:
        return await log_weight(redis_client, log) == admitted

    await eventually(only_the_grants, timeout=2.0, what="unused permits given back")
    assert admitted < 120  # some callers were cancelled before their permit


# ------------------------------------------------------------------ several processes


@pytest.mark.slow
async def test_four_leased_processes_never_exceed_limit_in_any_window(
    redis_server: RedisServer, redis_client: aioredis.Redis, prefix: str
) -> None:
    limit, window, seconds, lease, horizon = 60, 1.0, 4.0, 12, 0.05
    window_us = round((window + horizon) * 1e6)  # the slot a leased limiter holds (guard 0)
    log_key = window_keys(prefix, "leased", "")[0]
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=limiter_workers.leased_hammer,
            args=(redis_server.url, prefix, limit, window, seconds, 25, lease, horizon, out),
        )
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    # Side log on Redis's clock, by nonce: (slot time, last weight seen). A settle re-weighs a
    # lease's member at the same score ("<nonce>:<n>" -> "<nonce>:<used>"); a member gone
    # while its slot still counted was refunded (weight 0).
    seen: dict[str, tuple[int, int]] = {}
    leased = False

    async def poll() -> None:
        nonlocal leased
        pipe = redis_client.pipeline(transaction=True)
        pipe.time()
        pipe.zrange(log_key, 0, -1, withscores=True)
        (sec, usec), pairs = await pipe.execute()
        now = sec * 1_000_000 + usec
        present = set()
        for m, s in pairs:
            nonce, _, w = m.decode().partition(":")
            present.add(nonce)
            seen[nonce] = (int(s), int(w) if w else 1)
            leased = leased or (w != "" and int(w) > 1)
        for nonce, (at, _) in list(seen.items()):
            if nonce not in present and at > now - window_us:
                seen[nonce] = (at, 0)

    deadline = time.monotonic() + 60
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        await poll()
        await asyncio.sleep(0.02)
    await poll()
    admitted = [out.get(timeout=10) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert leased  # leases were taken (weight > 1 entries)
    # After the leases gave back their rest, the log's weights are exactly the permits used ...
    assert sum(w for _, w in seen.values()) == sum(admitted)
    # ... no window of Redis's clock held more than the limit (0 over-admission) ...
    assert weighted_max_in_window(list(seen.values()), window_us) <= limit
    # ... and the limiter admitted work: at least 80 % of limit x seconds / (window + horizon).
    assert sum(admitted) >= 0.8 * limit * seconds / (window + horizon)
