"""The "before" of the demo: the blog post's code, kept faithful on purpose, defects included.

- :class:`BlogRedisLimiter` is the post's ``SlidingWindowRateLimiter``: a sorted set per key,
  ``ZREMRANGEBYSCORE`` / ``ZCARD`` / ``ZADD str(now)`` / ``EXPIRE`` in a MULTI block on the
  *client's* clock, and a separate ``ZREM`` to roll back a rejected attempt. (One change: the
  post calls ``EXPIRE`` with its integer ``window_seconds``; the demo's scaled windows are
  fractional, which ``EXPIRE`` rejects, so the TTL is rounded up.)
- :class:`BlogMemoryLimiter` is the same algorithm on a per-process list: what each worker
  process ends up with when the limiter is not shared (the post's "manual token bucket without a
  distributed lock").
- :func:`retry_with_backoff` is the post's retrier: poll the limiter every 0.5 s, then call;
  on *any* exception sleep ``base_delay * 2**attempt`` plus up to 10 % jitter; give up after
  ``max_retries`` attempts by re-raising. No deadline, no classification, no shared budget.
- :func:`call_ai_api` is the post's request: ``raise Exception("Rate limited")`` on 429,
  ``raise_for_status()`` otherwise.

The demo scales every duration by its time scale (a "minute" lasts ``60 / time_scale`` s).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiohttp

__all__ = [
    "BlogMemoryLimiter",
    "BlogRedisLimiter",
    "NaiveLimiter",
    "call_ai_api",
    "retry_with_backoff",
]

T = TypeVar("T")


class NaiveLimiter(Protocol):
    """What :func:`retry_with_backoff` needs from a limiter."""

    async def acquire(self, key: str = "ratelimit:default") -> bool:
        """Record one request and return ``True``, or return ``False`` (over the limit)."""
        ...


class BlogRedisLimiter:
    """The blog post's Redis sorted-set limiter, verbatim but for the TTL rounding."""

    def __init__(self, redis_client: Any, max_requests: int, window_seconds: float) -> None:
        self.redis = redis_client
        self.max_requests = max_requests
        self.window_seconds = window_seconds

    async def acquire(self, key: str = "ratelimit:default") -> bool:
        """The post's ``acquire``: add first, count, roll back when over the limit."""
        now = time.time()
        window_start = now - self.window_seconds
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, window_start)
            pipe.zcard(key)
            pipe.zadd(key, {str(now): now})
            pipe.expire(key, max(1, math.ceil(self.window_seconds)))
            results = await pipe.execute()
        count = results[1]
        if count < self.max_requests:
            return True
        await self.redis.zrem(key, str(now))
        return False


class BlogMemoryLimiter:
    """The same algorithm on a list owned by one process (not shared with the others)."""

    def __init__(self, max_requests: int, window_seconds: float) -> None:
        self.max_requests = max_requests
        self.window_seconds = window_seconds
        self._log: dict[str, list[float]] = {}

    async def acquire(self, key: str = "ratelimit:default") -> bool:
        """Count the requests of the last window in this process only."""
        now = time.time()
        log = self._log.setdefault(key, [])
        del log[: bisect.bisect_right(log, now - self.window_seconds)]
        if len(log) < self.max_requests:
            log.append(now)
            return True
        return False


async def retry_with_backoff(
    coro_factory: Callable[[], Awaitable[T]],
    max_retries: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    rate_limiter: NaiveLimiter | None = None,
    limiter_key: str = "ratelimit:default",
    poll_interval: float = 0.5,
    on_attempt: Callable[[], None] | None = None,
) -> T:
    """The post's retrier (``poll_interval`` and ``on_attempt`` added for scaling and counting)."""
    for attempt in range(max_retries):
        if rate_limiter:
            while not await rate_limiter.acquire(limiter_key):  # noqa: ASYNC110 - the post polls
                await asyncio.sleep(poll_interval)
        try:
            if on_attempt is not None:
                on_attempt()
            return await coro_factory()
        except Exception:
            if attempt == max_retries - 1:
                raise
            delay = min(base_delay * (2**attempt), max_delay)
            jitter = random.uniform(0, delay * 0.1)
            await asyncio.sleep(delay + jitter)
    raise RuntimeError("Unexpected retry loop exit")


async def call_ai_api(session: aiohttp.ClientSession, url: str, text: str) -> Any:
    """The post's ``call_ai_api``."""
    async with session.post(url, json={"text": text}) as response:
        if response.status == 429:
            raise Exception("Rate limited")
        response.raise_for_status()
        return await response.json()
