"""Issue 14's acceptance runs, shared by ``benchmarks/ai_sdk.py`` and ``tests/test_ai_fleet.py``.

- :func:`run_fleet`: worker processes (``spawn``) x tasks sharing a redis-server drain a queue
  of jobs, each job one call through the real SDK (a contender of :mod:`resilience.demo._sdk`),
  against the strict fake AI server run in this process (:class:`RecordingUpstream`, which
  also notes which job each request was for, so that every 429 can be traced to its attempt).
- :func:`probe_fault`: the requests one scripted fault (``insufficient_quota``, a 400) costs a
  contender's call.
- :func:`run_pause`: two processes; one call draws a 429 with ``retry-after-ms: 1500`` while
  the other process keeps calling: how long until the hinted call's next attempt, and how many
  of the other process's requests reached the server meanwhile.

Times are ``time.monotonic`` everywhere (one clock for every process of a machine, and the
server's).

(Over 400 lines on purpose: the recording server, the multi-process run and the analysis of
its records stay in one module, so that the benchmark and the tests measure the same way.)
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import multiprocessing
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from aiohttp import web

from resilience.demo._sdk import (
    Api,
    Attempt,
    AttemptLog,
    Built,
    Contender,
    drain,
    lost_reason,
    make_call,
)
from resilience.demo.ai import AIUpstream, AIUpstreamServer, Fault, Provider
from resilience.demo.ai.server import check_host

__all__ = [
    "SCENARIOS",
    "Arrival",
    "FaultProbe",
    "FleetPart",
    "FleetResult",
    "PauseResult",
    "RecordingUpstream",
    "Scenario",
    "fleet_process",
    "import_sdks",
    "probe_fault",
    "run_fleet",
    "run_pause",
    "start_recording_upstream",
]

Scenario = Literal["warm", "cold", "tenant"]
#: ``warm``: each process makes one call, then the quota's window passes before the start;
#: ``cold``: clients and policies are built when the run starts; ``tenant``: warm, and another
#: client of the same key takes the server's whole quota every ``exhaust_every`` seconds, the
#: first time just before the start.
SCENARIOS: tuple[Scenario, ...] = ("warm", "cold", "tenant")


# -- the fake server, recording which job each request was ------------------------------------

_JOB = re.compile(r"job (-?\d+)")


class Arrival(NamedTuple):
    """One request as the server saw it: its arrival, the job named in its prompt (``None``
    if none), the status answered, its ``x-stainless-retry-count``."""

    t: float
    job: int | None
    status: int
    retry_count: int | None


@dataclass
class RecordingUpstream(AIUpstream):
    """:class:`~resilience.demo.ai.AIUpstream` that also records each request's job and
    arrival (:attr:`arrivals`) and each admission (:attr:`admitted_at`) on its clock, and
    answers the first requests of chosen jobs with scripted faults (:meth:`script_job`)."""

    arrivals: list[Arrival] = field(default_factory=list, init=False)
    admitted_at: list[float] = field(default_factory=list, init=False)
    started_at: float = field(default=0.0, init=False)
    _job_faults: dict[int, deque[Fault]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.started_at = self.clock()

    def script_job(self, job: int, *faults: Fault) -> None:
        """Answer the next requests for ``job`` with ``faults``, in order (whoever else calls
        meanwhile). Not to be mixed with :meth:`script`."""
        self._job_faults.setdefault(job, deque()).extend(faults)

    def next_exhaustion(self, after: float) -> float | None:
        """When the other client (``exhaust_every``) next takes the quota, at or after
        ``after``; ``None`` without one."""
        every = self.exhaust_every
        if every is None:
            return None
        k = max(1, math.ceil((after - self.started_at) / every))
        return self.started_at + k * every

    def admit(self, input_tokens: int, output_tokens: int) -> Any:
        """:meth:`AIUpstream.admit`, noting the admission's time in :attr:`admitted_at`."""
        decision = super().admit(input_tokens, output_tokens)
        if decision.status == 200:
            self.admitted_at.append(self.clock())
        return decision

    async def handle(self, request: web.Request, provider: Provider) -> web.StreamResponse:
        """:meth:`AIUpstream.handle`, answering the request's job with its next scripted fault
        (:meth:`script_job`) and noting its arrival in :attr:`arrivals`."""
        t = self.clock()
        job: int | None = None
        with contextlib.suppress(Exception):  # a request without a job is answered all the same
            m = _JOB.search((await request.read()).decode("utf-8", "replace"))
            job = int(m.group(1)) if m else None
        raw = request.headers.get("x-stainless-retry-count", "")
        pending = self._job_faults.get(job) if job is not None else None
        if pending:
            # The body is read (cached), so the parent pops this fault without yielding first.
            self.script(pending.popleft())
        response = await super().handle(request, provider)
        self.arrivals.append(Arrival(t, job, response.status, int(raw) if raw.isdigit() else None))
        return response

    def requests_for(self, job: int) -> list[Arrival]:
        """The requests that named ``job``."""
        return [a for a in self.arrivals if a.job == job]


async def start_recording_upstream(
    *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AIUpstreamServer:
    """:func:`~resilience.demo.ai.start_ai_upstream` with a :class:`RecordingUpstream`."""
    check_host(host)
    upstream = RecordingUpstream(**options)
    runner = web.AppRunner(upstream.make_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    actual = sockets[0].getsockname()[1] if sockets else port
    return AIUpstreamServer(upstream, runner, f"http://{host}:{actual}")


def _recording(server: AIUpstreamServer) -> RecordingUpstream:
    up = server.upstream
    assert isinstance(up, RecordingUpstream)
    return up


# -- the processes ----------------------------------------------------------------------------


def import_sdks() -> int:
    """Run once per pool process before any run: the imports a worker does at start-up (the
    SDKs' modules; not their clients, nor their first call). Silences the ``resilience``
    logger's retry warnings (the figures say the same)."""
    import logging
    import os

    logging.getLogger("resilience").setLevel(logging.ERROR)

    import httpx2  # noqa: F401
    import redis.asyncio  # noqa: F401

    import resilience.httpx2  # noqa: F401

    for name in ("openai", "anthropic", "tenacity"):
        with contextlib.suppress(ImportError):  # a contender that needs it says so
            __import__(name)
    return os.getpid()


@dataclass(frozen=True)
class FleetPart:
    """What one process does (picklable: it crosses to ``spawn``-ed processes).

    Attributes:
        contender, api: how each job is called (see :mod:`resilience.demo._sdk`).
        server_url: the fake AI server's base URL.
        redis_url, prefix: the shared Redis and the run's key prefix (the queue is
            ``<prefix>:jobs``; the policies' keys live under ``prefix``).
        tasks: concurrent tasks in this process.
        limit, window, attempts, deadline: the policies' parameters (``attempts`` is
            tenacity's too).
        warm_up: make one call (job ``-1``) before reporting ready; otherwise the client and
            the policies are built when the run starts (a cold client).
        role: ``"drain"`` the queue; for :func:`run_pause`, ``"hinted"`` (one call of
            :data:`PAUSE_JOB` after ``delay`` s) or ``"other"`` (a call every ``interval``
            s for ``duration`` s).
    """

    contender: Contender
    api: Api
    server_url: str
    redis_url: str
    prefix: str
    tasks: int = 10
    limit: int = 30
    window: float = 2.0
    attempts: int = 6
    deadline: float = 60.0
    warm_up: bool = True
    role: Literal["drain", "hinted", "other"] = "drain"
    delay: float = 0.0
    duration: float = 0.0
    interval: float = 0.1


#: The job whose first request :func:`run_pause` answers with the hinted 429.
PAUSE_JOB = 777_000
#: The first job number of :func:`run_pause`'s other process.
OTHER_JOBS = 888_000


def fleet_process(part: FleetPart) -> dict[str, Any]:
    """What each process runs (:func:`run_part` in its own event loop)."""
    return asyncio.run(run_part(part))


async def run_part(part: FleetPart) -> dict[str, Any]:
    """Build the call (before the start with ``warm_up``), report ready (``INCR
    <prefix>:ready``), wait for the start (an item on the list ``<prefix>:go``), then play the
    part's role.

    Returns ``{"done", "lost": {reason: n}, "attempts": [(job, start, end, outcome)],
    "finished"}``.
    """
    import redis.asyncio as aioredis

    from resilience import RedisStore
    from resilience.demo._queues import RedisQueue

    r = aioredis.Redis.from_url(part.redis_url, socket_timeout=5)
    stores: list[Any] = []
    built: Built | None = None
    log = AttemptLog()
    lost: Counter[str] = Counter()
    done = 0

    def build() -> Built:
        store = RedisStore.from_url(part.redis_url, prefix=part.prefix, timeout=2.0)
        stores.append(store)
        return make_call(
            part.contender,
            part.api,
            part.server_url,
            store=store,
            name="ai",
            limit=part.limit,
            window=part.window,
            attempts=part.attempts,
            deadline=part.deadline,
            log=log,
        )

    def on_done(job: int) -> None:
        nonlocal done
        done += 1

    def on_lost(job: int, exc: BaseException) -> None:
        lost[lost_reason(exc)] += 1

    try:
        if part.warm_up:
            built = build()
            await built.call(-1)
            log.attempts.clear()
        await r.incr(f"{part.prefix}:ready")
        while await r.blpop([f"{part.prefix}:go"], timeout=1) is None:
            pass  # the start: one item per process, pushed at once
        if built is None:
            built = build()
        if part.role == "drain":
            queue = RedisQueue(r, part.prefix)
            await drain(queue, built.call, part.tasks, on_done=on_done, on_lost=on_lost)
        elif part.role == "hinted":
            await asyncio.sleep(part.delay)
            try:
                await built.call(PAUSE_JOB)
                on_done(PAUSE_JOB)
            except Exception as exc:
                on_lost(PAUSE_JOB, exc)
        else:
            end = time.monotonic() + part.duration
            job = OTHER_JOBS
            while time.monotonic() < end:
                try:
                    await built.call(job)
                    on_done(job)
                except Exception as exc:
                    on_lost(job, exc)
                job += 1
                await asyncio.sleep(part.interval)
        finished = time.monotonic()
    finally:
        if built is not None:
            await built.aclose()
        for store in stores:
            await store.aclose()
        await r.aclose()
    return {"done": done, "lost": dict(lost), "attempts": log.attempts, "finished": finished}


@contextlib.asynccontextmanager
async def _fleet(
    parts: Sequence[FleetPart], redis_url: str, prefix: str
) -> AsyncIterator[tuple[Any, list[asyncio.Future[dict[str, Any]]]]]:
    """Fresh ``spawn`` processes (imports done) running ``parts``; yields the Redis client and
    the parts' futures once every process is ready (start them with :func:`_go`); cleans the
    run's keys afterwards."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    pool = ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()
    try:
        await asyncio.gather(*(loop.run_in_executor(pool, import_sdks) for _ in parts))
        futures = [loop.run_in_executor(pool, fleet_process, p) for p in parts]
        while int(await r.get(f"{prefix}:ready") or 0) < len(parts):
            if any(f.done() for f in futures):
                await asyncio.gather(*futures)  # a process failed before the start: raise it
                raise RuntimeError("a fleet process ended before the start")
            await asyncio.sleep(0.01)
        yield r, futures
    finally:
        pool.shutdown(cancel_futures=True)
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


async def _go(r: Any, prefix: str, processes: int) -> None:
    """Start every process of the run at once."""
    await r.rpush(f"{prefix}:go", *["go"] * processes)


# -- the fleet run ----------------------------------------------------------------------------


@dataclass
class FleetResult:
    """One contender x SDK x scenario, as the server counted it (the measured part only).

    Attributes:
        jobs, done, lost, lost_reasons: jobs queued, completed, lost (their call raised).
        requests: requests that reached the server; ``answered_429`` of them answered 429,
            ``share_429`` = their share.
        sdk_retries: requests carrying ``x-stainless-retry-count`` above 0 (the SDK's own).
        goodput: admissions over what the quota allowed (``limit * (elapsed / window + 1)``).
        max_in_window: most admissions of ours in any rolling window (server's decisions).
        other_tenant: admissions the other client took (scenario ``tenant``).
        wall: seconds from the start to the last process's end.
        the_429s: each 429 (up to 20): when it arrived after the start, its job and, for
            contenders whose function attempt is one request, how long after the attempt
            started (after the limiter admitted it) it arrived.
        lag: arrival lag (attempt start to server arrival) in the first window vs after.
    """

    scenario: str
    api: str
    contender: str
    processes: int
    tasks: int
    jobs: int
    done: int = 0
    lost: int = 0
    lost_reasons: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    answered_429: int = 0
    share_429: float = 0.0
    sdk_retries: int = 0
    goodput: float = 0.0
    max_in_window: int = 0
    other_tenant: int = 0
    wall: float = 0.0
    the_429s: list[str] = field(default_factory=list)
    lag: list[str] = field(default_factory=list)


async def run_fleet(
    scenario: Scenario,
    api: Api,
    contender: Contender,
    *,
    redis_url: str,
    jobs: int = 150,
    processes: int = 3,
    tasks: int = 10,
    limit: int = 30,
    window: float = 2.0,
    exhaust_every: float = 5.0,
    attempts: int = 6,
    deadline: float = 60.0,
) -> FleetResult:
    """The acceptance run: ``processes`` x ``tasks`` draining ``jobs`` through ``contender``
    against a fresh strict server of ``limit`` per ``window`` (see :data:`SCENARIOS`)."""
    options: dict[str, Any] = {"limit": limit, "window": window}
    if scenario == "tenant":
        options["exhaust_every"] = exhaust_every
    warm_up = scenario != "cold"
    server = await start_recording_upstream(**options)
    up = _recording(server)
    prefix = f"ai-fleet:{uuid.uuid4().hex[:8]}"
    part = FleetPart(
        contender=contender,
        api=api,
        server_url=server.url,
        redis_url=redis_url,
        prefix=prefix,
        tasks=tasks,
        limit=limit,
        window=window,
        attempts=attempts,
        deadline=deadline,
        warm_up=warm_up,
    )
    try:
        async with _fleet([part] * processes, redis_url, prefix) as (r, futures):
            await r.rpush(f"{prefix}:jobs", *(f"{i}:0" for i in range(jobs)))
            if warm_up:
                await asyncio.sleep(window + 0.3)  # the warm-up calls leave every window
            fire = up.next_exhaustion(time.monotonic() + 0.05)
            if fire is not None:
                # Start just after the other client took the whole quota: the fleet's first
                # requests, in flight together, come back 429 together (the hard case).
                await asyncio.sleep(max(0.0, fire + 0.02 - time.monotonic()))
            go = time.monotonic()
            await _go(r, prefix, processes)
            results = await asyncio.gather(*futures)
    finally:
        await server.stop()
    res = FleetResult(scenario, api, contender, processes, tasks, jobs)
    lost: Counter[str] = Counter()
    for p in results:
        res.done += p["done"]
        lost.update(p["lost"])
    res.lost = sum(lost.values())
    res.lost_reasons = dict(lost.most_common())
    arrivals = [a for a in up.arrivals if a.t >= go]
    res.requests = len(arrivals)
    res.answered_429 = sum(1 for a in arrivals if a.status == 429)
    res.share_429 = res.answered_429 / res.requests if res.requests else 0.0
    res.sdk_retries = sum(1 for a in arrivals if (a.retry_count or 0) > 0)
    ok_times = [t for t in up.admitted_at if t >= go]
    if len(arrivals) >= 2:
        elapsed = arrivals[-1].t - arrivals[0].t
        res.goodput = len(ok_times) / (limit * (elapsed / window + 1))
    res.max_in_window = _max_in_window(ok_times, window)
    res.other_tenant = up.ai_stats().other_tenant
    res.wall = max(p["finished"] for p in results) - go
    # One function attempt is one request for these two; the others retry inside the call.
    per_request = contender in ("resilience", "tenacity")
    attempts_log = [a for p in results for a in p["attempts"]] if per_request else []
    res.the_429s = describe_429s(arrivals, attempts_log, go)
    res.lag = describe_lag(arrivals, attempts_log, go, window)
    return res


def _max_in_window(ok_times: Sequence[float], window: float) -> int:
    best = 0
    for i, t in enumerate(ok_times):
        j = bisect.bisect_right(ok_times, t - window)
        best = max(best, i - j + 1)
    return best


def _starts(attempts: Sequence[Sequence[Any]]) -> dict[int, list[float]]:
    starts: dict[int, list[float]] = {}
    for job, start, _end, _outcome in attempts:
        starts.setdefault(int(job), []).append(float(start))
    for ts in starts.values():
        ts.sort()
    return starts


def _attempt_start(arrival: Arrival, starts: dict[int, list[float]]) -> float | None:
    """The start of the attempt that sent ``arrival`` (its job's latest before it)."""
    ts = starts.get(arrival.job) if arrival.job is not None else None
    if not ts:
        return None
    i = bisect.bisect_right(ts, arrival.t)
    return ts[i - 1] if i else None


def describe_429s(
    arrivals: Sequence[Arrival], attempts: Sequence[Attempt], go: float, most: int = 20
) -> list[str]:
    """Each 429 (up to ``most``): its arrival after ``go``, its job, and how long after its
    attempt started it arrived (when ``attempts`` tell)."""
    starts = _starts(attempts)
    out = []
    for a in arrivals:
        if a.status != 429:
            continue
        s = _attempt_start(a, starts)
        lag = "" if s is None else f" ({1000 * (a.t - s):.0f} ms after its attempt started)"
        out.append(f"t={a.t - go:.3f} s job {a.job}{lag}")
        if len(out) >= most:
            break
    return out


def describe_lag(
    arrivals: Sequence[Arrival], attempts: Sequence[Attempt], go: float, window: float
) -> list[str]:
    """Arrival lag (attempt start to server arrival), first window vs after."""
    starts = _starts(attempts)
    first: list[float] = []
    after: list[float] = []
    for a in arrivals:
        s = _attempt_start(a, starts)
        if s is not None:
            (first if s - go < window else after).append(a.t - s)
    out = []
    for name, lags in (("first window", first), ("after", after)):
        if lags:
            lags.sort()
            out.append(
                f"{name}: {len(lags)} requests, lag p50 {1000 * lags[len(lags) // 2]:.0f} ms, "
                f"max {1000 * lags[-1]:.0f} ms"
            )
    return out


# -- the single-request rules -----------------------------------------------------------------


@dataclass
class FaultProbe:
    """What one call cost when the server answered its first request with a fault."""

    contender: str
    api: str
    fault: str
    requests: int
    error: str
    seconds: float


async def probe_fault(contender: Contender, api: Api, fault: Fault, label: str) -> FaultProbe:
    """One call of ``contender`` (its policies on a memory store) whose requests are all
    answered ``fault`` (a billing error or a bad request does not go away by itself): how
    many requests it sent before giving up."""
    job = 424_242
    async with await start_recording_upstream(limit=1000, window=60.0) as server:
        up = _recording(server)
        up.script_job(job, *[fault] * 20)
        built = make_call(contender, api, server.url, name=f"probe-{uuid.uuid4().hex[:6]}")
        start = time.monotonic()
        try:
            await built.call(job)
            error = "none (a retry succeeded)"
        except Exception as exc:
            error = lost_reason(exc)
        finally:
            await built.aclose()
        seconds = time.monotonic() - start
        return FaultProbe(contender, api, label, len(up.requests_for(job)), error, seconds)


# -- the fleet pause --------------------------------------------------------------------------


@dataclass
class PauseResult:
    """The hinted 429 with 2 processes.

    Attributes:
        delay: seconds from the 429's arrival to the hinted call's next request (``None``: no
            next request).
        other_in_flight: the other process's requests that arrived within 50 ms after the
            429 (sent before anyone could know of it).
        other_during: the other process's requests that arrived later, before ``hint - 0.1``
            s (1.4 s) after the 429: those are the ones the pause should have kept off.
        other_total: all its requests.
        outcome: how the hinted call ended.
    """

    contender: str
    api: str
    delay: float | None
    other_in_flight: int
    other_during: int
    other_total: int
    outcome: str


async def run_pause(
    contender: Contender,
    api: Api,
    *,
    redis_url: str,
    hint_ms: int = 1500,
    limit: int = 30,
    window: float = 2.0,
) -> PauseResult:
    """Two processes sharing ``redis_url``: the ``other`` calls every 0.1 s for 3.5 s; the
    ``hinted`` one calls once, 1 s in, and that call's first request is answered 429 with
    ``retry-after-ms: hint_ms`` (and no other hint)."""
    server = await start_recording_upstream(limit=limit, window=window)
    up = _recording(server)
    up.script_job(PAUSE_JOB, Fault.rate_limited(retry_after_ms=hint_ms))
    prefix = f"ai-pause:{uuid.uuid4().hex[:8]}"
    base = FleetPart(
        contender=contender,
        api=api,
        server_url=server.url,
        redis_url=redis_url,
        prefix=prefix,
        limit=limit,
        window=window,
    )
    hinted = FleetPart(**{**base.__dict__, "role": "hinted", "delay": 1.0})
    other = FleetPart(**{**base.__dict__, "role": "other", "duration": 3.5})
    try:
        async with _fleet([hinted, other], redis_url, prefix) as (r, futures):
            await asyncio.sleep(window + 0.3)  # the warm-up calls leave every window
            await _go(r, prefix, 2)
            results = await asyncio.gather(*futures)
    finally:
        await server.stop()
    mine = up.requests_for(PAUSE_JOB)
    others = [a for a in up.arrivals if a.job is not None and a.job >= OTHER_JOBS]
    first = mine[0].t if mine else math.nan
    delay = mine[1].t - first if len(mine) >= 2 else None
    hint = hint_ms / 1000
    in_flight = sum(1 for a in others if first < a.t <= first + 0.05)
    during = sum(1 for a in others if first + 0.05 < a.t < first + hint - 0.1)
    lost = results[0]["lost"]
    outcome = "done" if results[0]["done"] else ", ".join(lost) or "?"
    return PauseResult(contender, api, delay, in_flight, during, len(others), outcome)
