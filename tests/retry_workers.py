"""Worker processes for the fleet-wide retry-budget test (started with the "spawn" context)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any


def budget_worker(
    url: str, prefix: str, calls: int, spacing: float, ready: Any, go: Any, out: Any
) -> None:
    """Make ``calls`` always-failing calls, one every ``spacing`` s, under
    ``Retry(5, budget=RetryBudget(store=RedisStore(url)))``; put the attempt count on ``out``."""
    from resilience import RedisStore, Retry, RetryBudget, backoff

    async def main() -> int:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        budget = RetryBudget(0.2, 10, store=store, name="fleet")
        retry = Retry(5, backoff=backoff.constant(0.001), budget=budget)
        attempts = 0

        async def always_fails() -> None:
            nonlocal attempts
            attempts += 1
            raise ConnectionError("upstream down")

        ready.set()
        go.wait(30)
        t0 = time.monotonic()
        for i in range(calls):
            delay = t0 + i * spacing - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            with contextlib.suppress(ConnectionError):
                await retry.call(always_fails)
        await store.aclose()
        return attempts

    out.put(asyncio.run(main()))
