"""The rate limiter in one screen: 12 workers share "5 calls per 2 seconds".

    .venv/bin/python examples/limiter.py                         # in-process (MemoryStore)
    .venv/bin/python examples/limiter.py --redis redis://localhost:6379/0   # fleet-wide

Each worker calls a decorated coroutine in a loop; the limiter makes them wait (no polling,
first come first served) so that no rolling 2-second window sees more than 5 calls. Run it in
several terminals with ``--redis`` and the quota is shared by all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import resilience


async def main(redis_url: str | None, seconds: float) -> None:
    store: resilience.Store = (
        resilience.RedisStore.from_url(redis_url) if redis_url else resilience.MemoryStore()
    )
    # The default latency guard (0.15 s) keeps each admission's slot a little past the window,
    # so the times this process observes (after scheduling and printing) stay within the quota
    # too; guard=0 counts exactly on the store's clock.
    limiter = resilience.SlidingWindowLimiter(5, 2.0, store=store, name="example-api")
    t0 = time.monotonic()
    calls: list[float] = []

    async def call_api(worker: int) -> None:
        calls.append(time.monotonic() - t0)  # when this process actually calls
        print(f"{calls[-1]:6.2f}s  worker {worker:2d} calls the API")

    # As a decorator, `@limiter` takes one permit per call: `limited = limiter(call_api)`.
    # Here each worker asks explicitly, so it can stop when its slot lies beyond the run.
    async def worker(i: int) -> None:
        while True:
            left = seconds - (time.monotonic() - t0)
            try:
                await limiter.acquire(timeout=max(left, 0.0))
            except resilience.RateLimited:
                return  # the next free slot is after the end of the run
            await call_api(i)

    await asyncio.gather(*[worker(i) for i in range(12)])
    busiest = max(sum(1 for c in calls if t - 2.0 < c <= t) for t in calls)
    print(
        f"\n{len(calls)} calls in {time.monotonic() - t0:.1f}s; "
        f"at most {busiest} in any rolling 2 s window (limit 5)"
    )
    if isinstance(store, resilience.RedisStore):
        await store.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="The sliding-window rate limiter in action.")
    ap.add_argument("--redis", metavar="URL", help="share the quota through this Redis")
    ap.add_argument("--seconds", type=float, default=6.0, help="how long to run")
    args = ap.parse_args()
    asyncio.run(main(args.redis, args.seconds))
