"""Sliding-window conformance: the same assertions against every store."""

from __future__ import annotations

import asyncio

from resilience import SlidingWindowLimiter


async def test_exactly_limit_admitted_under_concurrency(store) -> None:
    lim = SlidingWindowLimiter(10, 5.0, store=store, guard=0)
    results = await asyncio.gather(*[lim.try_acquire() for _ in range(200)])
    assert sum(d.allowed for d in results) == 10
    waits = [d.retry_after for d in results if not d.allowed]
    assert all(4.0 < w <= 5.0 for w in waits)
