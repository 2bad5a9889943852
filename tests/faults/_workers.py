"""Worker processes of the multi-process fault tests (importable under the "spawn" context)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from resilience import RedisStore, SlidingWindowLimiter
from resilience.stores import FallbackStore


def limiter_worker(
    url: str, prefix: str, limit: int, window: float, stop: Any, ready: Any, out: Any, idx: int
) -> None:
    """Call ``try_acquire`` every ~10 ms until ``stop`` is set; report every decision.

    Puts ``idx`` on ``ready`` after the first shared decision. Each record: (wall time,
    admitted, decided locally, seconds taken, deciders seen).
    """
    asyncio.run(_limiter_worker(url, prefix, limit, window, stop, ready, out, idx))


async def _limiter_worker(
    url: str, prefix: str, limit: int, window: float, stop: Any, ready: Any, out: Any, idx: int
) -> None:
    store = RedisStore.from_url(url, prefix=prefix, timeout=0.25)
    fs = FallbackStore(store, "local", presence_interval=0.2)
    lim = SlidingWindowLimiter(limit, window, store=fs, name="q", guard=0)
    records: list[tuple[float, bool, bool, float, int]] = []
    errors: list[str] = []
    while not stop.is_set():
        before = fs.stats["window_acquire"]
        t0 = time.monotonic()
        ok = False
        try:
            ok = (await lim.try_acquire()).allowed
        except Exception as exc:  # any escape is a failure of the test
            errors.append(repr(exc))
        dt = time.monotonic() - t0
        local = fs.stats["window_acquire"] > before
        records.append((time.time(), ok, local, dt, fs.deciders(lim._limits, "")[0]))
        if len(records) == 1:
            ready.put(idx)
        await asyncio.sleep(0.01)
    await fs.aclose()
    out.put((idx, records, errors))
