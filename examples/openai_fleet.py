"""The OpenAI SDK under resilience: the recipe to copy, run against a local fake OpenAI.

    .venv/bin/python examples/openai_fleet.py            # starts a strict fake server itself
    .venv/bin/python -m resilience.demo.ai --port 8000 --limit 30 --window 2 &
    .venv/bin/python examples/openai_fleet.py --server http://127.0.0.1:8000 \\
        --redis redis://localhost:6379/0                 # in several terminals: one shared quota

60 jobs at once, one chat completion each, through `Pipeline(Retry, CircuitBreaker,
SlidingWindowLimiter)` used as a decorator around the SDK call, with every default (the SDK's
errors are classified by the library: 429/5xx/timeouts retried after the server's
`retry-after-ms`, a 400 or `insufficient_quota` raised at once). See docs/ai.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import openai

from resilience import (
    CircuitBreaker,
    MemoryStore,
    Pipeline,
    RedisStore,
    Retry,
    SlidingWindowLimiter,
    Store,
)
from resilience.demo.ai import start_ai_upstream


async def main(server_url: str | None, redis_url: str | None, jobs: int) -> None:
    # A strict local stand-in for api.openai.com: 30 requests per rolling 2 s, real 429s beyond.
    server = None
    if server_url is None:
        server = await start_ai_upstream(limit=30, window=2.0)
        server_url = server.url
    store: Store = RedisStore.from_url(redis_url) if redis_url else MemoryStore()

    # max_retries=0: resilience retries; the SDK's own retries would multiply the attempts
    # (3 x 6 per call) and bypass the limiter and the breaker.
    client = openai.AsyncOpenAI(base_url=server_url + "/v1", api_key="sk-test", max_retries=0)

    @Pipeline(
        Retry(attempts=6, deadline=60),  # the whole call, waits included, within 60 s
        CircuitBreaker(store=store, name="openai"),  # 10 upstream failures in 60 s: open 30 s
        # Your tier's quota per model (e.g. 500 requests per 60 s); here the fake server's.
        SlidingWindowLimiter(30, 2.0, store=store, name="openai:gpt-4o-mini"),
    )
    async def summarize(text: str) -> str:
        reply = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Summarize: {text}"}],
            max_tokens=32,
        )
        return reply.choices[0].message.content or ""

    # The same policies for every request of a client, without a decorator (docs/httpx.md):
    #   client = openai.AsyncOpenAI(max_retries=0, http_client=httpx2.AsyncClient(
    #       transport=resilience.httpx2.ResilientTransport(retry, breaker, limiter)))

    t0 = time.monotonic()
    results = await asyncio.gather(
        *(summarize(f"job {i}") for i in range(jobs)), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    print(f"{jobs - len(failed)}/{jobs} jobs done in {time.monotonic() - t0:.1f} s")
    for exc in failed[:3]:
        print(f"  failed: {type(exc).__name__}: {exc}")
    await client.close()
    if isinstance(store, RedisStore):
        await store.aclose()
    if server is not None:
        stats = await server.stop()
        print(f"the server saw {stats.requests} requests, {stats.rate_limited} answered 429")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="The OpenAI SDK under resilience policies.")
    ap.add_argument("--server", metavar="URL", help="a running fake server (default: start one)")
    ap.add_argument("--redis", metavar="URL", help="share the policies' state through this Redis")
    ap.add_argument("--jobs", type=int, default=60)
    args = ap.parse_args()
    asyncio.run(main(args.server, args.redis, args.jobs))
