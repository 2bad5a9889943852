"""Worker-process bodies for the multi-process settle tests (spawned, so importable)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from resilience import RateLimited, RedisStore, SlidingWindowLimiter


def settle_load(
    url: str,
    prefix: str,
    limit: int,
    window: float,
    seconds: float,
    tasks: int,
    seed: int,
    out: Any,
) -> None:
    """Tasks reserve a random estimate, hold it a few ms, settle to a random actual <= it;
    report every (token, actual) settled."""

    async def main() -> list[tuple[str, int]]:
        rng = random.Random(seed)
        store = RedisStore.from_url(url, prefix=prefix, timeout=5.0, max_connections=32)
        lim = SlidingWindowLimiter(limit, window, store=store, name="settle", guard=0)
        stop = time.monotonic() + seconds
        settled: list[tuple[str, int]] = []

        async def worker() -> None:
            while True:
                left = stop - time.monotonic()
                if left <= 0:
                    return
                est = rng.randint(1, limit // 4)
                try:
                    async with lim.reserve(est, timeout=left) as r:
                        await asyncio.sleep(rng.uniform(0.0, 0.02))
                        actual = rng.randint(0, est)
                        await r.settle(actual)
                        settled.append((r._token, actual))
                except RateLimited:  # the next slot lies beyond the run
                    return

        await asyncio.gather(*[worker() for _ in range(tasks)])
        await store.aclose()
        return settled

    out.put(asyncio.run(main()))
