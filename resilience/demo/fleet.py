"""The demo's fleet: workers draining a queue of jobs against the strict upstream.

Two ways to call the upstream, same fleet, same queue (with ``api="openai"`` or
``"anthropic"``, the fake AI server of :mod:`resilience.demo.ai` through the real SDK instead:
naive is the SDK's defaults, resilience the SDK with ``max_retries=0`` under the pipeline; see
:func:`resilience.demo._workers.sdk_worker`):

- ``naive``: the blog post's code (:mod:`resilience.demo.naive`): a limiter polled every 0.5 s,
  sleep-and-retry on any exception, three attempts, then the job is lost.
- ``resilience``: ``Pipeline(Retry(...), CircuitBreaker(...), SlidingWindowLimiter(...))`` around
  one aiohttp request, with :func:`resilience.aiohttp.raise_for_status`; a job whose call still
  fails for a transient reason (breaker open, budget spent, deadline) goes back on the queue after
  the wait the error names, at most :data:`MAX_REQUEUES` times, and is reported failed with its
  reason after that. Nothing is dropped silently in either mode.

Without ``redis_url`` every worker is a group of asyncio tasks in this process and the
resilience policies share the embedded :class:`resilience.MemoryStore` (the naive limiter is
per worker, as it would be per process). With ``redis_url`` every worker is a process (``spawn``),
the queue is a Redis list, and both the blog's limiter and our policies share that Redis.

All durations of the story are expressed in "story seconds" and divided by ``time_scale``: with
the default of 30 a "minute" (the upstream's window) lasts 2 s.

The module is the demo's public face (:func:`run_demo`, :func:`run_mode`, :class:`DemoConfig`,
:class:`ModeResult`); its parts are private: ``_config`` (parameters and figures), ``_queues``
(the job queues) and ``_workers`` (one worker of either mode, in this process or its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor

from resilience.demo._config import MAX_REQUEUES, DemoConfig, Mode, ModeResult, ProgressFn
from resilience.demo._queues import MemoryQueue
from resilience.demo._workers import (
    Tally,
    flush_otlp,
    process_entry,
    quiet_logs,
    setup_otlp,
    warm,
    worker_in_process,
)
from resilience.demo.upstream import UpstreamServer, start_upstream

__all__ = [
    "MAX_REQUEUES",
    "DemoConfig",
    "Mode",
    "ModeResult",
    "ProgressFn",
    "make_executor",
    "run_demo",
    "run_mode",
]

# -- a whole mode ------------------------------------------------------------------------------


async def run_mode(
    cfg: DemoConfig,
    mode: Mode,
    *,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
) -> ModeResult:
    """Run one mode end to end against a fresh upstream and return its figures.

    ``progress(done, total)`` is called about ten times a second. With ``cfg.redis_url`` the
    workers run in ``executor`` (a spawn-context process pool of ``cfg.workers`` processes;
    one is created when not given).
    """
    stop: UpstreamServer
    if cfg.api == "analyze":
        url, stop = await start_upstream(
            limit=cfg.limit, window=cfg.window, fail_rate=cfg.fail_rate, seed=cfg.seed
        )
    else:
        from resilience.demo.ai import start_ai_upstream

        stop = await start_ai_upstream(
            limit=cfg.limit, window=cfg.window, fail_rate=cfg.fail_rate, seed=cfg.seed
        )
        url = stop.url
    run_id = uuid.uuid4().hex[:8]
    tally = Tally()
    started = time.monotonic()
    try:
        if cfg.redis_url is None:
            await _run_in_process(cfg, mode, url, tally, run_id, progress)
        else:
            await _run_processes(cfg, mode, url, tally, run_id, progress, executor)
        wall = time.monotonic() - started
    finally:
        await stop()
    stats = stop.upstream.stats()
    result = ModeResult(mode=mode, jobs=cfg.jobs)
    result.completed = tally.completed
    result.lost = sum(tally.lost.values())
    result.lost_reasons = dict(tally.lost.most_common())
    # Through an SDK, the client's own retries happen inside one call: count what the
    # upstream received.
    result.requests = tally.attempts if cfg.api == "analyze" else stats.requests
    result.retries = result.requests - len(tally.tried)
    result.requeued = tally.requeued
    result.upstream_429 = stats.rejected_429
    result.upstream_503 = stats.failed_503
    result.share_429 = stats.rejected_429 / stats.requests if stats.requests else 0.0
    result.breaker_trips = tally.trips
    result.goodput = stats.goodput
    result.max_in_window = stats.max_in_window
    result.admitted_per_window = stop.upstream.admitted_per_window()
    result.wall_time = wall
    return result


async def _watch(get_done: Callable[[], Awaitable[int]], total: int, progress: ProgressFn) -> None:
    while True:
        progress(await get_done(), total)
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _watching(
    get_done: Callable[[], Awaitable[int]], total: int, progress: ProgressFn | None
) -> AsyncIterator[None]:
    """Report progress every 0.1 s while the body runs (nothing when ``progress`` is None)."""
    watcher = asyncio.ensure_future(_watch(get_done, total, progress)) if progress else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _run_in_process(
    cfg: DemoConfig,
    mode: Mode,
    url: str,
    tally: Tally,
    run_id: str,
    progress: ProgressFn | None,
) -> None:
    from resilience import MemoryStore

    queue = MemoryQueue(cfg.jobs)
    store = MemoryStore()

    async def done() -> int:
        return queue.finished

    async with _watching(done, cfg.jobs, progress):
        await asyncio.gather(
            *(
                worker_in_process(cfg, mode, url, queue, tally, store, run_id)
                for _ in range(cfg.workers)
            )
        )
    if progress:
        progress(queue.finished, cfg.jobs)


async def _run_processes(
    cfg: DemoConfig,
    mode: Mode,
    url: str,
    tally: Tally,
    run_id: str,
    progress: ProgressFn | None,
    executor: Executor | None,
) -> None:
    import redis.asyncio as aioredis

    assert cfg.redis_url is not None
    prefix = f"resilience-demo:{run_id}"
    client = aioredis.Redis.from_url(cfg.redis_url, socket_timeout=5)
    own = executor is None
    pool = executor or make_executor(cfg)
    try:
        await client.rpush(f"{prefix}:jobs", *(f"{i}:0" for i in range(cfg.jobs)))

        async def done() -> int:
            return int(await client.get(f"{prefix}:done") or 0)

        loop = asyncio.get_running_loop()
        async with _watching(done, cfg.jobs, progress):
            results = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, process_entry, cfg, mode, url, prefix)
                    for _ in range(cfg.workers)
                )
            )
        for r in results:
            tally.merge(r)
        if progress:
            progress(await done(), cfg.jobs)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
        if own:
            pool.shutdown()


def make_executor(cfg: DemoConfig) -> ProcessPoolExecutor:
    """A spawn-context pool of ``cfg.workers`` processes, warmed up (imports done)."""
    pool = ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"))
    futures = [pool.submit(warm, cfg.api) for _ in range(cfg.workers * 2)]
    for f in futures:
        f.result()
    return pool


async def run_demo(
    cfg: DemoConfig,
    modes: tuple[Mode, ...] = ("naive", "resilience"),
    *,
    progress: Callable[[str], ProgressFn] | None = None,
) -> list[ModeResult]:
    """Run each mode in turn (each against its own fresh upstream) and return their figures.

    ``progress(mode)`` returns the progress callback of that mode's run.
    """
    quiet_logs(cfg)
    otel = setup_otlp("resilience-demo") if cfg.otlp and cfg.redis_url is None else None
    executor = make_executor(cfg) if cfg.redis_url is not None else None
    results = []
    try:
        for mode in modes:
            cb = progress(mode) if progress else None
            results.append(await run_mode(cfg, mode, progress=cb, executor=executor))
    finally:
        if executor is not None:
            executor.shutdown()
        flush_otlp(otel)
    return results
