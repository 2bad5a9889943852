"""The demo's fleet: workers draining a queue of jobs against the strict upstream.

Two ways to call the upstream, same fleet, same queue:

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp

from resilience.demo.naive import (
    BlogMemoryLimiter,
    BlogRedisLimiter,
    NaiveLimiter,
    call_ai_api,
    retry_with_backoff,
)
from resilience.demo.upstream import ANALYZE_PATH, start_upstream

__all__ = [
    "MAX_REQUEUES",
    "DemoConfig",
    "Mode",
    "ModeResult",
    "run_demo",
    "run_mode",
]

Mode = Literal["naive", "resilience"]
#: How many times the resilience mode puts a job back on the queue before reporting it failed.
MAX_REQUEUES = 5
_REASON_MAX = 80


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of one demo run (the CLI flags).

    Attributes:
        limit: the upstream's quota per window (the story's 50 per minute).
        time_scale: story seconds per real second; the window lasts ``60 / time_scale`` s.
        workers: worker groups (processes with ``redis_url``).
        tasks: concurrent tasks per worker.
        jobs: jobs in the queue.
        fail_rate: fraction of requests the upstream answers 503.
        redis_url: share state (and the queue) through this Redis; ``None``: in-process.
        seed: seed of the upstream's 503 draw.
        otlp: export traces (``resilience.telemetry.setup``) in every worker.
        verbose: let the ``resilience`` logger's retry warnings through (default: silenced,
            the table says the same).
    """

    limit: int = 50
    time_scale: float = 30.0
    workers: int = 4
    tasks: int = 8
    jobs: int = 300
    fail_rate: float = 0.0
    redis_url: str | None = None
    seed: int | None = 1
    otlp: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        for name in ("limit", "workers", "tasks", "jobs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (isinstance(self.time_scale, (int, float)) and self.time_scale > 0):
            raise ValueError(f"time_scale must be > 0, got {self.time_scale!r}")
        if not (isinstance(self.fail_rate, (int, float)) and 0 <= self.fail_rate < 1):
            raise ValueError(f"fail_rate must be in [0, 1), got {self.fail_rate!r}")

    @property
    def window(self) -> float:
        """The upstream's window in real seconds (a story minute)."""
        return 60.0 / self.time_scale

    def scaled(self, story_seconds: float) -> float:
        """Real seconds for a duration of the story."""
        return story_seconds / self.time_scale


@dataclass
class ModeResult:
    """The figures of one mode, as printed in the final table and in ``--json``.

    Attributes:
        mode: ``"naive"`` or ``"resilience"``.
        jobs, completed, lost: jobs queued, completed, and reported failed (``lost_reasons``
            counts them by reason). ``completed + lost == jobs`` always.
        requests: HTTP requests the clients sent (every attempt).
        retries: requests beyond the first of each job (requeued jobs' requests included).
        requeued: jobs put back on the queue (resilience mode only).
        upstream_429, upstream_503: answers of the upstream, counted by the upstream.
        share_429: ``upstream_429 / requests seen by the upstream``.
        breaker_trips: transitions of the circuit breaker to open (fleet-wide).
        goodput: admitted requests as a fraction of what the quota allowed over the run.
        max_in_window: most admissions the upstream saw in one rolling window (≤ limit).
        admitted_per_window: admissions per consecutive window (for plots).
        wall_time: seconds from the first worker start to the last job's end.
    """

    mode: str
    jobs: int
    completed: int = 0
    lost: int = 0
    lost_reasons: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    requeued: int = 0
    upstream_429: int = 0
    upstream_503: int = 0
    share_429: float = 0.0
    breaker_trips: int = 0
    goodput: float = 0.0
    max_in_window: int = 0
    admitted_per_window: list[int] = field(default_factory=list)
    wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class _Tally:
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


def _reason(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        text = f"HTTP {status}"
    else:
        msg = str(exc)
        text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text[:_REASON_MAX]


# -- job queues -------------------------------------------------------------------------------


class _Queue:
    """What workers need from a job queue; ``done`` feeds the progress bar."""

    async def get(self) -> tuple[int, int] | None:  # (job id, times requeued)
        raise NotImplementedError

    async def put_back(self, job: int, requeues: int) -> None:
        raise NotImplementedError

    async def done(self) -> None:
        raise NotImplementedError


class _MemoryQueue(_Queue):
    def __init__(self, jobs: int) -> None:
        self.items: list[tuple[int, int]] = [(i, 0) for i in range(jobs)]
        self.items.reverse()
        self.finished = 0

    async def get(self) -> tuple[int, int] | None:
        return self.items.pop() if self.items else None

    async def put_back(self, job: int, requeues: int) -> None:
        self.items.insert(0, (job, requeues))

    async def done(self) -> None:
        self.finished += 1


class _RedisQueue(_Queue):
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:jobs"
        self.done_key = f"{prefix}:done"

    async def get(self) -> tuple[int, int] | None:
        raw = await self.client.lpop(self.key)
        if raw is None:
            return None
        job, requeues = (int(x) for x in raw.decode().split(":"))
        return job, requeues

    async def put_back(self, job: int, requeues: int) -> None:
        await self.client.rpush(self.key, f"{job}:{requeues}")

    async def done(self) -> None:
        await self.client.incr(self.done_key)


# -- the two ways to call the upstream ---------------------------------------------------------

JobHandler = Callable[[int, int], Awaitable[None]]


async def _naive_worker(
    cfg: DemoConfig,
    url: str,
    queue: _Queue,
    tally: _Tally,
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
                    tally.lost[_reason(exc)] += 1
                await queue.done()

        await asyncio.gather(*(task() for _ in range(cfg.tasks)))


async def _resilience_worker(
    cfg: DemoConfig, url: str, queue: _Queue, tally: _Tally, store: Any, run_id: str
) -> None:
    # Imported here: the demo's naive mode must run even while a policy is being developed.
    from resilience import CircuitBreaker, Pipeline, Retry, RetryBudget, SlidingWindowLimiter
    from resilience import backoff as bk
    from resilience.aiohttp import raise_for_status, retry_on
    from resilience.policies.retry.predicates import hint_of

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
                    transient = not isinstance(getattr(exc, "status", None), int) or (
                        getattr(exc, "retryable", False)
                    )
                    if transient and requeues < MAX_REQUEUES:
                        # Nack: wait what the error says (breaker open, upstream's hint), then
                        # put the job back for any worker.
                        wait = hint_of(exc)
                        await asyncio.sleep(min(cfg.window, wait or cfg.scaled(1.0)))
                        tally.requeued += 1
                        await queue.put_back(job, requeues + 1)
                        continue
                    tally.lost[_reason(exc)] += 1
                await queue.done()

        await asyncio.gather(*(task() for _ in range(cfg.tasks)))


def _quiet_logs(cfg: DemoConfig) -> None:
    log = logging.getLogger("resilience")
    if cfg.verbose:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    else:
        log.setLevel(logging.ERROR)


def _setup_otlp(service: str) -> Any:
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


def _flush_otlp(handle: Any) -> None:
    for name in ("shutdown", "force_flush"):
        fn = getattr(handle, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                fn()
            return


# -- one worker (a group of tasks, or a process) ---------------------------------------------


async def _worker_in_process(
    cfg: DemoConfig, mode: Mode, url: str, queue: _Queue, tally: _Tally, store: Any, run_id: str
) -> None:
    if mode == "naive":
        limiter = BlogMemoryLimiter(cfg.limit, cfg.window)  # per worker: not shared
        await _naive_worker(cfg, url, queue, tally, limiter, "ratelimit:default")
    else:
        await _resilience_worker(cfg, url, queue, tally, store, run_id)


async def _worker_process_main(
    cfg: DemoConfig, mode: Mode, url: str, prefix: str
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from resilience import RedisStore

    _quiet_logs(cfg)
    otel = _setup_otlp(f"resilience-demo-{mode}") if cfg.otlp else None
    assert cfg.redis_url is not None
    client = aioredis.Redis.from_url(cfg.redis_url, socket_timeout=5)
    queue = _RedisQueue(client, prefix)
    tally = _Tally()
    try:
        if mode == "naive":
            limiter = BlogRedisLimiter(client, cfg.limit, cfg.window)  # shared, as in the post
            await _naive_worker(cfg, url, queue, tally, limiter, f"{prefix}:ratelimit")
        else:
            store = RedisStore.from_url(cfg.redis_url, prefix=prefix, timeout=2.0)
            try:
                await _resilience_worker(cfg, url, queue, tally, store, prefix)
            finally:
                await store.aclose()
    finally:
        await client.aclose()
        _flush_otlp(otel)
    return tally.to_dict()


def _process_entry(cfg: DemoConfig, mode: Mode, url: str, prefix: str) -> dict[str, Any]:
    return asyncio.run(_worker_process_main(cfg, mode, url, prefix))


def _warm() -> int:
    import resilience.aiohttp  # noqa: F401 - import cost paid before the clock starts

    return os.getpid()


# -- a whole mode ------------------------------------------------------------------------------

ProgressFn = Callable[[int, int], None]


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
    url, stop = await start_upstream(
        limit=cfg.limit, window=cfg.window, fail_rate=cfg.fail_rate, seed=cfg.seed
    )
    run_id = uuid.uuid4().hex[:8]
    tally = _Tally()
    started = time.monotonic()
    try:
        if cfg.redis_url is None:
            await _run_in_process(cfg, mode, url, tally, run_id, progress)
        else:
            await _run_processes(cfg, mode, url, tally, run_id, progress, executor)
        wall = time.monotonic() - started
    finally:
        stats = await stop()
    result = ModeResult(mode=mode, jobs=cfg.jobs)
    result.completed = tally.completed
    result.lost = sum(tally.lost.values())
    result.lost_reasons = dict(tally.lost.most_common())
    result.requests = tally.attempts
    result.retries = tally.attempts - len(tally.tried)
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
    tally: _Tally,
    run_id: str,
    progress: ProgressFn | None,
) -> None:
    from resilience import MemoryStore

    queue = _MemoryQueue(cfg.jobs)
    store = MemoryStore()

    async def done() -> int:
        return queue.finished

    async with _watching(done, cfg.jobs, progress):
        await asyncio.gather(
            *(
                _worker_in_process(cfg, mode, url, queue, tally, store, run_id)
                for _ in range(cfg.workers)
            )
        )
    if progress:
        progress(queue.finished, cfg.jobs)


async def _run_processes(
    cfg: DemoConfig,
    mode: Mode,
    url: str,
    tally: _Tally,
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
                    loop.run_in_executor(pool, _process_entry, cfg, mode, url, prefix)
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
    futures = [pool.submit(_warm) for _ in range(cfg.workers * 2)]
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
    _quiet_logs(cfg)
    otel = _setup_otlp("resilience-demo") if cfg.otlp and cfg.redis_url is None else None
    executor = make_executor(cfg) if cfg.redis_url is not None else None
    results = []
    try:
        for mode in modes:
            cb = progress(mode) if progress else None
            results.append(await run_mode(cfg, mode, progress=cb, executor=executor))
    finally:
        if executor is not None:
            executor.shutdown()
        _flush_otlp(otel)
    return results
