"""One worker of the demo: a group of tasks draining the queue, in this process or its own.

Two ways to call the upstream, same queue: :func:`naive_worker` (the blog post's code, from
:mod:`resilience.demo.naive`) and :func:`resilience_worker` (the library's pipeline around one
aiohttp request); with ``--api openai|anthropic``, :func:`sdk_worker` (the real SDK, with its
own retries or under the pipeline). :func:`worker_process_main` is what each process of a
Redis-backed fleet runs; :class:`Tally` is what a worker counts, merged across processes by
:mod:`resilience.demo.fleet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from resilience.demo._config import MAX_REQUEUES, DemoConfig, Mode
from resilience.demo._queues import Queue, RedisQueue
from resilience.demo.naive import (
    BlogMemoryLimiter,
    BlogRedisLimiter,
    NaiveLimiter,
    call_ai_api,
    retry_with_backoff,
)
from resilience.demo.upstream import ANALYZE_PATH

__all__ = [
    "Tally",
    "failure_reason",
    "flush_otlp",
    "process_entry",
    "quiet_logs",
    "setup_otlp",
    "warm",
    "worker_in_process",
]

_REASON_MAX = 80


@dataclass
class Tally:
    """Per-worker counters (merged across processes)."""

    completed: int = 0
    lost: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    requeued: int = 0
    trips: int = 0
    tried: set[int] = field(default_factory=set)

    def attempt(self, job: int) -> None:
        self.attempts += 1
        self.tried.add(job)

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "lost": dict(self.lost),
            "tried": sorted(self.tried),
            "attempts": self.attempts,
            "requeued": self.requeued,
            "trips": self.trips,
        }

    def merge(self, d: dict[str, Any]) -> None:
        self.completed += d["completed"]
        self.lost.update(d["lost"])
        self.attempts += d["attempts"]
        self.tried.update(d["tried"])
        self.requeued += d["requeued"]
        self.trips += d["trips"]


def failure_reason(exc: BaseException) -> str:
    """How a lost job is counted: ``HTTP <status>`` (with the SDK error's class, e.g.
    ``HTTP 429 RateLimitError``) or the error's type and message, short."""
    status = getattr(exc, "status", None)
    sdk_status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        text = f"HTTP {status}"
    elif isinstance(sdk_status, int):  # the openai and anthropic SDKs' APIStatusError
        text = f"HTTP {sdk_status} {type(exc).__name__}"
    else:
        msg = str(exc)
        text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text[:_REASON_MAX]


# -- the two ways to call the upstream -------------------------------------------------------


async def naive_worker(
    cfg: DemoConfig,
    url: str,
    queue: Queue,
    tally: Tally,
    limiter: NaiveLimiter,
    limiter_key: str,
) -> None:
    endpoint = url + ANALYZE_PATH

    async with aiohttp.ClientSession() as session:

        async def task() -> None:
            while (item := await queue.get()) is not None:
                job = item[0]

                def attempt(job: int = job) -> None:
                    tally.attempt(job)

                try:
                    await retry_with_backoff(
                        lambda job=job: call_ai_api(session, endpoint, f"job {job}"),  # type: ignore[misc]
                        max_retries=3,
                        base_delay=cfg.scaled(2.0),
                        max_delay=cfg.scaled(60.0),
                        rate_limiter=limiter,
                        limiter_key=limiter_key,
                        poll_interval=cfg.scaled(0.5),
                        on_attempt=attempt,
                    )
                    tally.completed += 1
                except Exception as exc:
                    tally.lost[failure_reason(exc)] += 1
                await queue.done()

        await asyncio.gather(*(task() for _ in range(cfg.tasks)))


async def resilience_worker(
    cfg: DemoConfig, url: str, queue: Queue, tally: Tally, store: Any, run_id: str
) -> None:
    # Imported here: the demo's naive mode must run even while a policy is being developed.
    from resilience import CircuitBreaker, Pipeline, Retry, RetryBudget, SlidingWindowLimiter
    from resilience import backoff as bk
    from resilience.aiohttp import raise_for_status, retry_on

    endpoint = url + ANALYZE_PATH

    def on_state(change: Any) -> None:
        if change.new == "open":
            tally.trips += 1

    # The story's policies, in story seconds: 50 per minute; open after ten failures (429s
    # included) in a minute, for 30 seconds; retries with full jitter from 1 s up to 30 s,
    # within a 3-minute deadline and a fleet-wide budget of 20 % of the traffic.
    limiter = SlidingWindowLimiter(cfg.limit, cfg.window, store=store, name=f"demo-{run_id}")
    breaker = CircuitBreaker(
        failure_threshold=10,
        window=cfg.window,
        break_duration=cfg.scaled(30.0),
        store=store,
        name=f"demo-{run_id}",
        listeners=[on_state],
    )
    retry = Retry(
        attempts=6,
        backoff=bk.exponential(initial=cfg.scaled(1.0), max=cfg.scaled(30.0), jitter="full"),
        retry_on=retry_on(),
        deadline=cfg.scaled(180.0),
        budget=RetryBudget(store=store, name=f"demo-{run_id}"),
        name="demo",
    )
    pipeline = Pipeline(retry, breaker, limiter, name="analyze")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        @pipeline
        async def analyze(job: int) -> Any:
            tally.attempt(job)
            # An idempotency key makes the POST safe to retry, as with Stripe-style APIs.
            headers = {"Idempotency-Key": f"{run_id}-{job}"}
            async with session.post(endpoint, json={"text": f"job {job}"}, headers=headers) as r:
                raise_for_status(r)
                return await r.json()

        async def task() -> None:
            while (item := await queue.get()) is not None:
                job, requeues = item
                try:
                    await analyze(job)
                    tally.completed += 1
                except Exception as exc:
                    if await _requeue_or_lose(cfg, queue, tally, job, requeues, exc):
                        continue
                await queue.done()

        await asyncio.gather(*(task() for _ in range(cfg.tasks)))


async def _requeue_or_lose(
    cfg: DemoConfig, queue: Queue, tally: Tally, job: int, requeues: int, exc: Exception
) -> bool:
    """After a failed call in resilience mode: put the job back (``True``) when the failure is
    transient and requeues remain, after the wait it names; else count it lost."""
    from resilience.http import classify
    from resilience.policies.retry._predicates import hint_of

    c = classify(exc)
    if c is not None:
        transient = c.retryable
    else:
        transient = not isinstance(getattr(exc, "status", None), int) or bool(
            getattr(exc, "retryable", False)
        )
    if transient and requeues < MAX_REQUEUES:
        # Nack: wait what the error says (breaker open, upstream's hint), then put the job
        # back for any worker.
        wait = hint_of(exc)
        await asyncio.sleep(min(cfg.window, wait or cfg.scaled(1.0)))
        tally.requeued += 1
        await queue.put_back(job, requeues + 1)
        return True
    tally.lost[failure_reason(exc)] += 1
    return False


async def sdk_worker(
    cfg: DemoConfig, mode: Mode, url: str, queue: Queue, tally: Tally, store: Any, run_id: str
) -> None:
    """The fleet's worker with ``--api openai|anthropic``: each job is one chat call to the
    fake AI server at ``url`` through the real SDK.

    ``naive``: the SDK's defaults (``max_retries=2``, its own backoff, no limiter); a job is
    lost when the call raises. ``resilience``: the SDK with ``max_retries=0`` under
    ``Pipeline(Retry(attempts=6, deadline=60), CircuitBreaker(), SlidingWindowLimiter(limit,
    window))`` as a decorator, every other option (the classification included) the default;
    transient failures are requeued as in :func:`resilience_worker`.
    """
    from resilience.demo._sdk import make_call

    assert cfg.api != "analyze"

    def on_state(change: Any) -> None:
        if change.new == "open":
            tally.trips += 1

    built = make_call(
        "sdk" if mode == "naive" else "resilience",
        cfg.api,
        url,
        store=store,
        name=f"demo-{run_id}",
        limit=cfg.limit,
        window=cfg.window,
        listeners=[on_state],
        on_attempt=tally.attempt,
    )

    async def task() -> None:
        while (item := await queue.get()) is not None:
            job, requeues = item
            try:
                await built.call(job)
                tally.completed += 1
            except Exception as exc:
                if mode == "naive":
                    tally.lost[failure_reason(exc)] += 1
                elif await _requeue_or_lose(cfg, queue, tally, job, requeues, exc):
                    continue
            await queue.done()

    try:
        await asyncio.gather(*(task() for _ in range(cfg.tasks)))
    finally:
        await built.aclose()


# -- logs and traces --------------------------------------------------------------------------


def quiet_logs(cfg: DemoConfig) -> None:
    """Silence the ``resilience`` logger's retry warnings unless ``cfg.verbose``."""
    log = logging.getLogger("resilience")
    if cfg.verbose:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    else:
        log.setLevel(logging.ERROR)


def setup_otlp(service: str) -> Any:
    """Configure OTLP export (``resilience.telemetry.setup``); returns its handle or None."""
    try:
        from resilience.telemetry import setup as otel_setup
    except ImportError:  # pragma: no cover - depends on the telemetry extra
        return None
    fn = getattr(otel_setup, "setup_telemetry", None)
    if not callable(fn):  # pragma: no cover
        return None
    try:
        return fn(service_name=service)
    except Exception as exc:  # the demo runs without telemetry rather than not at all
        logging.getLogger("resilience").error("demo: --otlp unavailable: %s", exc)
        return None


def flush_otlp(handle: Any) -> None:
    """Shut down (flushing) what :func:`setup_otlp` returned; ``None`` is fine."""
    for name in ("shutdown", "force_flush"):
        fn = getattr(handle, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                fn()
            return


# -- one worker (a group of tasks, or a process) ---------------------------------------------


async def worker_in_process(
    cfg: DemoConfig, mode: Mode, url: str, queue: Queue, tally: Tally, store: Any, run_id: str
) -> None:
    if cfg.api != "analyze":
        await sdk_worker(cfg, mode, url, queue, tally, store, run_id)
    elif mode == "naive":
        limiter = BlogMemoryLimiter(cfg.limit, cfg.window)  # per worker: not shared
        await naive_worker(cfg, url, queue, tally, limiter, "ratelimit:default")
    else:
        await resilience_worker(cfg, url, queue, tally, store, run_id)


async def worker_process_main(cfg: DemoConfig, mode: Mode, url: str, prefix: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from resilience import RedisStore

    quiet_logs(cfg)
    otel = setup_otlp(f"resilience-demo-{mode}") if cfg.otlp else None
    assert cfg.redis_url is not None
    client = aioredis.Redis.from_url(cfg.redis_url, socket_timeout=5)
    queue = RedisQueue(client, prefix)
    tally = Tally()
    try:
        if mode == "naive" and cfg.api == "analyze":
            limiter = BlogRedisLimiter(client, cfg.limit, cfg.window)  # shared, as in the post
            await naive_worker(cfg, url, queue, tally, limiter, f"{prefix}:ratelimit")
        else:
            store = RedisStore.from_url(cfg.redis_url, prefix=prefix, timeout=2.0)
            try:
                if cfg.api == "analyze":
                    await resilience_worker(cfg, url, queue, tally, store, prefix)
                else:
                    await sdk_worker(cfg, mode, url, queue, tally, store, prefix)
            finally:
                await store.aclose()
    finally:
        await client.aclose()
        flush_otlp(otel)
    return tally.to_dict()


def process_entry(cfg: DemoConfig, mode: Mode, url: str, prefix: str) -> dict[str, Any]:
    """The function each process of a Redis-backed fleet runs: its :class:`Tally`, as a dict."""
    return asyncio.run(worker_process_main(cfg, mode, url, prefix))


def warm(api: str = "analyze") -> int:
    """Run once per pool process before the clock starts: imports done (the SDK's too with
    ``api="openai"`` or ``"anthropic"``), returns the pid."""
    import resilience.aiohttp  # import costs paid before the clock starts

    if api != "analyze":
        import httpx2  # noqa: F401

        __import__(api)
        import resilience.demo._sdk  # noqa: F401
    return os.getpid()
