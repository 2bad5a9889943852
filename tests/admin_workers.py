"""Worker processes for the operator tools' fleet tests (started with the "spawn" context).

Each worker calls a fake upstream through a policy of a shared :class:`resilience.RedisStore`
every few milliseconds until ``stop`` is set, and puts ``(time.time(), pid, key)`` on ``out``
for every call that reached the upstream, as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any


def breaker_worker(url: str, prefix: str, state_refresh: float, stop: Any, out: Any) -> None:
    """Calls through ``CircuitBreaker(name="upstream")`` every 10 ms (key ``""``)."""
    from resilience import CircuitBreaker, CircuitOpen, RedisStore

    async def main() -> None:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        breaker = CircuitBreaker(
            100, 10, 30, store=store, name="upstream", state_refresh=state_refresh
        )

        async def upstream() -> None:
            out.put((time.time(), os.getpid(), ""))

        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(CircuitOpen):
                await breaker.call(upstream)
            await asyncio.sleep(0.01)
        await store.aclose()

    asyncio.run(main())


def limiter_worker(url: str, prefix: str, late: Any, stop: Any, out: Any) -> None:
    """Calls through ``SlidingWindowLimiter(10_000, 1, name="api", key=<tenant>)`` every
    10 ms for tenant ``"early"``, and also for ``"late"`` once ``late`` is set; a call held
    more than 50 ms is refused (``RateLimited``) and not made."""
    from resilience import RateLimited, RedisStore, SlidingWindowLimiter

    async def main() -> None:
        store = RedisStore.from_url(url, prefix=prefix, timeout=2.0)
        limiter = SlidingWindowLimiter(
            10_000, 1.0, store=store, name="api", key=lambda tenant: tenant, timeout=0.05
        )

        async def upstream(tenant: str) -> None:
            out.put((time.time(), os.getpid(), tenant))

        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            tenants = ("early", "late") if late.is_set() else ("early",)
            for tenant in tenants:
                with contextlib.suppress(RateLimited):
                    await limiter.call(upstream, tenant)
            await asyncio.sleep(0.01)
        await store.aclose()

    asyncio.run(main())
