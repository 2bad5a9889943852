"""Chaos soak: 4 processes through Retry + CircuitBreaker + SlidingWindowLimiter (RedisStore,
fallback "local") against a strict local upstream while calls are cancelled at random, the
upstream fails, and Redis is killed, restarted empty, slowed down and paused.

Run: ``.venv/bin/python benchmarks/soak.py [--seconds 90] [--processes 4] [--dump FILE]``

Every worker reaches Redis through a latency-injecting TCP proxy (``tests/latency_proxy.py``)
and runs ``TASKS`` jobs at a time, each ``Pipeline(Retry, CircuitBreaker, limiter)`` around
one upstream request. Cancellations:

- ``CANCEL_SHARE`` of the jobs are cancelled after a random delay (log-uniform, 0.1 ms to
  1 s): in the breaker's and the limiter's store calls, the wait for a reserved slot, the
  upstream call, the record of an outcome, a retry's backoff;
- ``PROBE_CANCEL_SHARE`` of the half-open probes within 20 ms of their permit, and
  ``OP_CANCEL_SHARE`` of the breaker's store operations (admissions asked of the store,
  failures recorded) within 3 ms, while the operation is in flight (these are rare events);
- at the end, every job still in flight.

Schedule (fractions of ``--seconds``, at least 60; the measured run starts after the workers
have run for a few seconds, so that each has announced itself to its peers):

- ``healthy`` (0): Redis and the upstream healthy.
- ``failing`` (0.10): the upstream answers 503 to ``FAIL_RATE`` of the requests: the
  breaker trips, probes, closes, trips again, fleet-wide.
- ``killed`` (0.22): Redis SIGKILLed; the upstream healthy again.
- ``restarted`` (0.32): Redis restarted empty on the same port.
- ``flap`` (0.35): killed again soon after it came back (a crash loop) ...
- ``re-restarted`` (0.37): ... and restarted empty again.
- ``slow`` (0.42): the proxy delays every command by 150 ms.
- ``paused`` (0.54): Redis SIGSTOPped (the proxy's delay back to 0).
- ``resumed`` (0.63): SIGCONT.
- ``opened`` (0.68): the parent opens the breaker until 0.80 (``CircuitBreaker.open``, from
  a store of its own).
- ``restart-open`` (0.73, once the slots reserved before the open are used): while it is
  open, Redis is SIGKILLed and restarted empty.
- ``flaky`` (0.86 to the end): the upstream fails again.

Around each restart the proxy refuses the workers until the parent has re-subscribed to the
breaker's channel, so no transition the restarted Redis publishes is missed.

Promises checked (PASS/FAIL; the exit status is 1 on any FAIL):

- **leaked permits = 0**: once the workers have stopped (and settled 1 s), Redis holds no
  probe lease (``P:{cb:api:}:p``) and no limiter entry in the future (``P:{rl:}:api``: a
  reservation without its caller). During the run, the parent samples the leases every
  0.1 s: none may be held longer than ``HOLD_LIMIT`` (a permit never returned is held until
  its lease, ``PROBE_LEASE``); and each reservation whose caller was cancelled in its slot
  wait must have left the log 0.5 s later (unless its release failed: Redis unreachable).
- **transitions in Redis = events seen**: the transitions published on the breaker channel
  (operator actions ``*`` and the re-seeds of a lost open state excluded) against the
  ``StateChange`` events the workers' listeners received (minus those of the local fallback
  breaker, which are not in Redis).
- **decision latency <= store timeout + 50 ms** in every phase: the time of each limiter
  decision (``window_acquire``) and breaker admission (``breaker_acquire``) as the policy
  sees it, the fallback included; the wait for a reserved slot is not part of it.
- **over-admission <= limit**: the local (fallback) admissions of the whole fleet in any
  rolling window (``window + guard``, less 50 ms of slack) never exceed the quota.
- **restart while open**: 0 upstream requests from the kill to the known deadline.
- **jobs lost = 0** (a cancelled job is not lost: counted apart).

Also reported per phase: admissions by Redis in the busiest rolling window, decision latency
percentiles, transitions; and where the cancellations landed, each worker's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUOTA = 40  # requests per WINDOW, the upstream's and ours
WINDOW = 2.0
GUARD = 0.15  # the limiter's default guard: each admission holds its slot WINDOW + GUARD
TASKS = 8  # concurrent jobs per process
STORE_TIMEOUT = 0.25
BOUND = STORE_TIMEOUT + 0.05  # the promised bound of one decision
PREFIX = "soak"
NAME = "api"
CANCEL_SHARE = 0.10  # share of the jobs cancelled after a random delay
PROBE_CANCEL_SHARE = 0.5  # share of the probes cancelled within 20 ms of their permit
# Share of the breaker's store operations (admissions asked of the store, failures recorded)
# whose caller is cancelled within 3 ms: while the operation is in flight, where a transition
# it makes must still be reported (the operation completes in the background).
OP_CANCEL_SHARE = 0.25
FAIL_RATE = 0.3  # 503s of the upstream in the failing phases
SLOW_DELAY = 0.15  # seconds the proxy adds to each command in the slow phase
THRESHOLD, BREAKER_WINDOW, BREAK = 10, 10.0, 2.0
# Longer than any legitimate probe (breaker admission, a reserved slot up to a window + guard
# ahead, a 429 penalty, the call, the record): a lease held past HOLD_LIMIT was not returned.
PROBE_LEASE = 5.0
HOLD_LIMIT = 4.0
SETTLE = 1.0  # seconds a worker waits after cancelling its jobs (background releases)

PLAN: list[tuple[str, float]] = [
    ("healthy", 0.0),
    ("failing", 0.10),
    ("killed", 0.22),
    ("restarted", 0.32),
    ("flap", 0.35),
    ("re-restarted", 0.37),
    ("slow", 0.42),
    ("paused", 0.54),
    ("resumed", 0.63),
    ("opened", 0.68),
    ("restart-open", 0.73),
    ("flaky", 0.86),
]
OUTAGES = ("killed", "flap", "paused")
ORPHANED = "transitions reported after their caller was cancelled"

# Where a job is (for the cancellation report): a dict per job, shared by its tasks.
STAGE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "soak_stage", default=None
)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _at(label: str) -> None:
    st = STAGE.get()
    if st is not None:
        st["at"] = label


# ---------------------------------------------------------------------------------- workers


def worker(redis_url: str, upstream_url: str, end: float, out: Any, idx: int) -> None:
    logging.getLogger("resilience").setLevel(logging.ERROR)  # retries log a warning each
    asyncio.run(_worker(redis_url, upstream_url, end, out, idx))


async def _worker(redis_url: str, upstream_url: str, end: float, out: Any, idx: int) -> None:
    import aiohttp
    import redis.asyncio as aioredis

    from resilience import (
        CircuitBreaker,
        Pipeline,
        RedisStore,
        Retry,
        Retryable,
        SlidingWindowLimiter,
        StateChange,
    )
    from resilience.backoff import exponential
    from resilience.stores import FallbackStore
    from resilience.stores.base import BreakerReply, WindowResult
    from resilience.stores.redis._keys import window_keys

    class TooMany(Retryable):
        def __init__(self, retry_after: float) -> None:
            super().__init__(f"429, retry after {retry_after}")
            self.retry_after = retry_after

    class Unavailable(Retryable):
        pass

    rss_start = _rss_mb()
    rng = random.Random(idx * 7919 + os.getpid())
    store = RedisStore.from_url(redis_url, prefix=PREFIX, timeout=STORE_TIMEOUT)
    events: list[tuple[float, str, str]] = []  # StateChange seen by the listener
    jobs: Counter[str] = Counter()

    def listener(change: StateChange) -> None:
        events.append((time.time(), change.old, change.new))
        st = STAGE.get()
        if st is not None and st.get("fired"):
            jobs[ORPHANED] += 1

    limiter = SlidingWindowLimiter(QUOTA, WINDOW, store=store, name=NAME, guard=GUARD)
    breaker = CircuitBreaker(
        THRESHOLD,
        BREAKER_WINDOW,
        BREAK,
        store=store,
        name=NAME,
        probe_lease=PROBE_LEASE,
        listeners=[listener],
    )
    fs = limiter.store
    assert isinstance(fs, FallbackStore)
    assert fs is breaker.store
    decisions: list[tuple[float, float, bool, str]] = []  # (wall time, seconds, local, kind)
    # (decision wall time, slot wall time, local share applied or 0 if shared, token)
    admissions: list[tuple[float, float, int, str]] = []
    released: set[str] = set()
    release_failed: set[str] = set()
    slot_checks: Counter[str] = Counter()  # reservations cancelled in their slot wait
    checking: set[asyncio.Task[None]] = set()
    local_changes: list[tuple[float, str, str]] = []  # transitions of the fallback breaker
    probes: Counter[str] = Counter()  # probe permits granted by Redis, and cancelled
    reseeds: list[float] = []  # restores of a lost open state this process applied

    win_acquire = fs.window_acquire

    async def window_acquire(*args: Any) -> WindowResult:
        _at("limiter store op")
        before = fs.stats["window_acquire"]
        t0 = time.perf_counter()
        r = await win_acquire(*args)
        dt = time.perf_counter() - t0
        now = time.time()
        local = r.token.startswith("L") if r.allowed else fs.stats["window_acquire"] > before
        decisions.append((now, dt, local, "limiter"))
        if r.allowed:
            share = fs.share(args[0], args[1])[0].limit if local else 0
            admissions.append((now, now + r.wait_us / 1e6, share, r.token))
        st = STAGE.get()
        if st is not None and r.allowed and r.wait_us > 0 and not local:
            st["token"] = r.token  # a reservation in Redis (the log's member)
        _at("slot wait" if r.allowed and r.wait_us > 0 else "after limiter")
        return r

    win_release = fs.window_release

    async def window_release(limits: Any, key: str, costs: Any, token: str) -> None:
        released.add(token)
        try:
            await win_release(limits, key, costs, token)
        except Exception:
            release_failed.add(token)  # Redis unreachable: the entry expires with its window
            raise

    br_acquire = fs.breaker_acquire

    async def breaker_acquire(*args: Any) -> BreakerReply:
        _at("breaker store op")
        st = STAGE.get()
        if st is not None and rng.random() < OP_CANCEL_SHARE:
            st["cancel"](rng.uniform(0.0, 0.003))
        before = fs.stats["breaker_acquire"]
        t0 = time.perf_counter()
        r = await br_acquire(*args)
        dt = time.perf_counter() - t0
        decisions.append((time.time(), dt, fs.stats["breaker_acquire"] > before, "breaker"))
        if st is not None and r.permit == "probe":
            st["probe"] = True
            if not r.token.startswith("L"):
                probes["granted"] += 1
                if rng.random() < PROBE_CANCEL_SHARE:
                    st["cancel"](rng.uniform(0.0, 0.02))  # the probe's limiter, call, record
        _at("after breaker")
        return r

    br_record = fs.breaker_record

    async def breaker_record(*args: Any) -> BreakerReply:
        _at("outcome record")
        st = STAGE.get()
        if st is not None and args[2] == "fail" and rng.random() < OP_CANCEL_SHARE:
            st["cancel"](rng.uniform(0.0, 0.003))
        r = await br_record(*args)
        if st is not None and args[4]:  # the token: this call was a probe
            st["probe"] = False
        _at("after record")
        return r

    def local_transitions(
        op: Callable[..., Awaitable[BreakerReply]],
    ) -> Callable[..., Awaitable[BreakerReply]]:
        async def wrapped(*args: Any) -> BreakerReply:
            r = await op(*args)
            if r.old and r.old != r.state:
                local_changes.append((time.time(), r.old, r.state))
            return r

        return wrapped

    primary_record = fs.primary.breaker_record

    async def primary_breaker_record(*args: Any) -> BreakerReply:
        r = await primary_record(*args)
        if args[2] == "restore" and not r.stale:
            reseeds.append(time.time())
        return r

    fs.window_acquire = window_acquire  # type: ignore[method-assign, assignment]
    fs.window_release = window_release  # type: ignore[method-assign]
    fs.breaker_acquire = breaker_acquire  # type: ignore[method-assign, assignment]
    fs.breaker_record = breaker_record  # type: ignore[method-assign, assignment]
    mem = fs.local
    mem.breaker_acquire = local_transitions(mem.breaker_acquire)  # type: ignore[method-assign, assignment]
    mem.breaker_record = local_transitions(mem.breaker_record)  # type: ignore[method-assign, assignment]
    fs.primary.breaker_record = primary_breaker_record  # type: ignore[method-assign, assignment]

    backoff = exponential()

    class StagedBackoff:
        """The default backoff, marking the job as sleeping before a retry."""

        max = backoff.max

        def __call__(self, attempt: int, previous: float) -> float:
            _at("retry backoff")
            return backoff(attempt, previous)

    pipe = Pipeline(Retry(attempts=20, deadline=60.0, backoff=StagedBackoff()), breaker, limiter)
    log_key = window_keys(PREFIX, NAME, "")[0]
    direct = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    async def check_released(token: str) -> None:
        """A reservation whose caller was cancelled in its slot wait must have left the log."""
        await asyncio.sleep(0.5)
        try:
            score = await direct.zscore(log_key, token)
        except Exception:
            slot_checks["unverifiable (Redis unreachable)"] += 1
            return
        if score is None:
            slot_checks["released"] += 1
        elif token in release_failed:
            slot_checks["kept: release failed, Redis unreachable"] += 1
        else:
            slot_checks["leaked"] += 1

    cancelled_at: Counter[str] = Counter()
    errors: list[str] = []
    loop = asyncio.get_running_loop()

    async with aiohttp.ClientSession() as session:

        async def call() -> None:
            _at("upstream call")
            async with session.get(upstream_url + "/v1/analyze") as resp:
                await resp.read()
            _at("after call")
            if resp.status == 429:
                jobs["429"] += 1
                raise TooMany(float(resp.headers.get("Retry-After", "1")))
            if resp.status >= 500:
                raise Unavailable(str(resp.status))

        async def job() -> None:
            fired: list[str] = []
            handles: list[asyncio.TimerHandle] = []

            def fire() -> None:
                if not task.done() and not fired:
                    fired.append(stage["at"] + (" (probe held)" if stage["probe"] else ""))
                    stage["fired"] = True
                    task.cancel()

            def cancel_after(delay: float) -> None:
                handles.append(loop.call_later(delay, fire))

            # Where the job is: the task copies this context, and so do the store operations
            # it starts in tasks of their own; they all update this one dict.
            stage: dict[str, Any] = {
                "at": "before any store call",
                "probe": False,
                "cancel": cancel_after,
            }
            STAGE.set(stage)
            task = asyncio.ensure_future(pipe.call(call))
            if rng.random() < CANCEL_SHARE:
                cancel_after(10 ** rng.uniform(-4, 0))  # 0.1 ms to 1 s
            try:
                await task
                jobs["done"] += 1
            except asyncio.CancelledError:
                if stage["at"] == "slot wait" and stage.get("token"):
                    check = asyncio.ensure_future(check_released(stage["token"]))
                    checking.add(check)
                    check.add_done_callback(checking.discard)
                me = asyncio.current_task()
                outer = getattr(me, "cancelling", lambda: 0)()  # Python 3.11+: cancelled by run
                if fired and not outer:
                    jobs["cancelled"] += 1
                    cancelled_at[fired[0]] += 1
                    if fired[0].endswith("(probe held)"):
                        probes["cancelled"] += 1
                    return
                raise
            finally:
                for h in handles:
                    h.cancel()

        async def run() -> None:
            while time.time() < end:
                try:
                    await job()
                except asyncio.CancelledError:
                    jobs["cancelled at the end"] += 1
                    raise
                except Exception as exc:
                    jobs["lost"] += 1
                    if len(errors) < 5:
                        errors.append(repr(exc))

        runners = [asyncio.ensure_future(run()) for _ in range(TASKS)]
        await asyncio.sleep(max(0.0, end - time.time()))
        for r in runners:
            r.cancel()  # the end: every job still in flight is cancelled
        await asyncio.gather(*runners, return_exceptions=True)
        await asyncio.sleep(SETTLE)  # shielded releases and records finish in the background
        await asyncio.gather(*checking)
    await direct.aclose()
    await store.aclose()
    admissions = [a for a in admissions if a[3] not in released]
    out.put(
        {
            "idx": idx,
            "decisions": decisions,
            "admissions": [a[:3] for a in admissions],
            "events": events,
            "local_changes": local_changes,
            "reseeds": reseeds,
            "jobs": dict(jobs),
            "cancelled_at": dict(cancelled_at),
            "errors": errors,
            "rss": (rss_start, _rss_mb()),
            "probes": dict(probes),
            "slot_checks": dict(slot_checks),
        }
    )


# ---------------------------------------------------------------------------------- parent


def _busiest(times: list[float], width: float) -> tuple[int, float]:
    """The most ``times`` in any rolling window ``(t - width, t]``, and that ``t``."""
    times = sorted(times)
    best, at, j = 0, 0.0, 0
    for i, t in enumerate(times):
        while times[j] <= t - width:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, t
    return best, at


def _max_in_window(times: list[float], width: float) -> int:
    return _busiest(times, width)[0]


def _dump(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f)


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class WallClock:
    """``time.time`` for the upstream, remembering its first reading (the upstream's start),
    so its request log (seconds since start) can be placed on the wall clock."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self) -> float:
        now = time.time()
        if self.first is None:
            self.first = now
        return now


class Watch:
    """The parent's own view of Redis (direct, not through the proxy): the breaker's
    transitions published on its channel, and its probe leases and state, sampled."""

    def __init__(self, port: int) -> None:
        from resilience.stores.redis._keys import breaker_channel, breaker_keys, breaker_tag

        self.port = port
        self.channel = breaker_channel(PREFIX)
        self.tag = breaker_tag(NAME, "")
        self.state_key, _, self.lease_key = breaker_keys(PREFIX, NAME, "")
        self.messages: list[tuple[float, int, str]] = []  # (wall time, gen, state)
        self.drops: list[float] = []  # subscription lost
        self.down: list[tuple[float, float]] = []  # (kill, re-subscribed): drops expected
        self.leases: dict[str, tuple[float, float]] = {}  # token -> (granted, last seen) us
        self.expired_seen: set[str] = set()
        self.states: list[tuple[float, str, int, int]] = []  # (wall, st, g, ou - now us)
        self._reader: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._client: Any = None

    def _redis(self, **kw: Any) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, **kw)

    async def subscribe(self, port: int) -> None:
        """(Re)subscribe to the channel; returns once Redis confirmed the subscription."""
        await self._stop_reader()
        self.port = port
        client = self._redis()
        ps = client.pubsub()
        await ps.subscribe(self.channel)
        deadline = time.monotonic() + 10.0
        while True:
            m = await ps.get_message(timeout=1.0)
            if m is not None and m["type"] == "subscribe":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no confirmation of SUBSCRIBE {self.channel}")
        self._reader = asyncio.ensure_future(self._read(client, ps))

    async def _read(self, client: Any, ps: Any) -> None:
        try:
            while True:
                m = await ps.get_message(timeout=0.25)
                if m is None or m["type"] != "message":
                    continue
                tag, gen, state = str(m["data"]).split(" ")
                if tag == self.tag:
                    self.messages.append((time.time(), int(gen), state))
        except asyncio.CancelledError:
            raise
        except Exception:
            self.drops.append(time.time())
        finally:
            for closing in (ps.aclose(), client.aclose()):
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(closing, 1.0)

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    def start_sampling(self) -> None:
        self._sampler = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        port = self.port
        client = self._redis(socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                await asyncio.sleep(0.1)
                if port != self.port:
                    await client.aclose()
                    port = self.port
                    client = self._redis(socket_timeout=0.5, socket_connect_timeout=0.5)
                try:
                    p = client.pipeline(transaction=False)
                    p.time()
                    p.zrange(self.lease_key, 0, -1, withscores=True)
                    p.hmget(self.state_key, "st", "g", "ou")
                    (sec, usec), leases, (st, g, ou) = await p.execute()
                except Exception:
                    continue  # Redis down or paused
                now = int(sec) * 1_000_000 + int(usec)
                for token, expiry in leases:
                    granted = expiry - PROBE_LEASE * 1e6
                    self.leases[token] = (self.leases.get(token, (granted, 0.0))[0], now)
                    if now > expiry:
                        self.expired_seen.add(token)
                self.states.append(
                    (time.time(), st or "", int(g or 0), int(ou or 0) - now if ou else 0)
                )
        finally:
            await client.aclose()

    def max_hold(self) -> float:
        """The longest a probe lease was seen held (seconds)."""
        return max(((seen - granted) / 1e6 for granted, seen in self.leases.values()), default=0)

    async def reserved_ahead(self) -> float:
        """Seconds until the latest slot the limiter's log holds (0 if none is ahead)."""
        from resilience.stores.redis._keys import window_keys

        log_key, _ = window_keys(PREFIX, NAME, "")
        client = self._redis(socket_timeout=2.0)
        try:
            sec, usec = await client.time()
            last = await client.zrange(log_key, -1, -1, withscores=True)
        finally:
            await client.aclose()
        now = int(sec) * 1_000_000 + int(usec)
        return max(0.0, (last[0][1] - now) / 1e6) if last else 0.0

    async def final(self) -> dict[str, Any]:
        """What Redis holds once every worker has stopped: probe leases, future reservations."""
        from resilience.stores.redis._keys import window_keys

        log_key, _ = window_keys(PREFIX, NAME, "")
        client = self._redis(socket_timeout=2.0)
        try:
            sec, usec = await client.time()
            now = int(sec) * 1_000_000 + int(usec)
            leases = await client.zrange(self.lease_key, 0, -1, withscores=True)
            future = await client.zcount(log_key, f"({now}", "+inf")
            entries = await client.zcard(log_key)
            st, g = await client.hmget(self.state_key, "st", "g")
        finally:
            await client.aclose()
        return {
            "leases": len(leases),
            "leases_unexpired": sum(1 for _, e in leases if e > now),
            "future": future,
            "entries": entries,
            "state": f"{st or 'closed'} (generation {g or 0})",
        }

    async def aclose(self) -> None:
        await self._stop_reader()
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)


async def main() -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--dump", metavar="FILE", help="also write the raw records as JSON")
    args = ap.parse_args()
    if args.seconds < 60:
        ap.error("--seconds must be at least 60 (the phases must outlast the store's probes)")
    from resilience import CircuitBreaker, RedisStore
    from resilience.demo.upstream import start_upstream
    from tests.latency_proxy import LatencyProxy
    from tests.redis_servers import RedisServer, free_port

    total: float = args.seconds
    n: int = args.processes
    server = RedisServer().start()
    clock = WallClock()
    url, stop_upstream = await start_upstream(limit=QUOTA, window=WINDOW, clock=clock)
    upstream = stop_upstream.upstream
    watch = Watch(server.port)
    await watch.subscribe(server.port)
    watch.start_sampling()
    loop = asyncio.get_running_loop()
    dead = ("127.0.0.1", free_port())  # nothing listens there: connections are refused

    with LatencyProxy.running(server.port) as proxy:

        async def restart(kill: bool) -> None:
            """(Kill and) start Redis empty; the proxy refuses workers until the parent has
            re-subscribed, so every transition the restarted Redis publishes is seen."""
            proxy.target = dead
            if kill:
                killed[0] = time.time()
                server.kill()
            await loop.run_in_executor(None, server.start)
            await watch.subscribe(server.port)
            watch.down.append((killed[0], time.time()))
            proxy.target = ("127.0.0.1", server.port)

        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        # Spawn, imports, then a few seconds of jobs before the measured run starts: starting
        # 4 interpreters at once starves the CPU, and a process times out before it has
        # announced itself to its peers (it then takes the whole quota: see failure-modes.md).
        warmup = 8.0
        t0 = time.time() + warmup
        end = t0 + total
        procs = [ctx.Process(target=worker, args=(proxy.url, url, end, out, i)) for i in range(n)]
        for p in procs:
            p.start()
        await asyncio.sleep(max(0.0, t0 - time.time()))
        phases: list[tuple[str, float]] = []
        opened = killed_open = deadline = 0.0
        killed = [0.0]
        for name, frac in PLAN:
            await asyncio.sleep(max(0.0, t0 + frac * total - time.time()))
            now = time.time()
            if name in ("failing", "flaky"):
                upstream.fail_rate = FAIL_RATE
            elif name in ("killed", "flap"):
                upstream.fail_rate = 0.0
                proxy.target = dead
                killed[0] = time.time()
                server.kill()
            elif name in ("restarted", "re-restarted"):
                await restart(kill=False)
            elif name == "slow":
                proxy.delay = SLOW_DELAY
            elif name == "paused":
                proxy.delay = 0.0
                server.signal(signal.SIGSTOP)
            elif name == "resumed":
                server.signal(signal.SIGCONT)
            elif name == "opened":
                # Open until 0.80 (a store of the parent's own): the restart happens meanwhile.
                until = t0 + 0.80 * total
                admin_store = RedisStore.from_url(server.url, prefix=PREFIX, timeout=2.0)
                admin = CircuitBreaker(
                    THRESHOLD, BREAKER_WINDOW, BREAK, store=admin_store, name=NAME,
                    probe_lease=PROBE_LEASE,
                )  # fmt: skip
                opened = time.time()
                deadline = until  # the parent's clock: at or before the deadline in Redis
                await admin.open(duration=until - opened)
                await admin_store.aclose()
            elif name == "restart-open":
                # Calls admitted before the open may still wait for their reserved slots:
                # kill once the last of them is used, so every later request is a violation.
                await asyncio.sleep(await watch.reserved_ahead() + 0.2)
                now = killed_open = time.time()
                await restart(kill=True)
            phases.append((name, now))
        results: list[dict[str, Any]] = []
        for _ in procs:
            results.append(await loop.run_in_executor(None, out.get, True, total + 120))
        for p in procs:
            p.join(timeout=10)
        final = await watch.final()
    await watch.aclose()
    await stop_upstream()
    server.stop()
    first = clock.first or 0.0
    requests = [(r.t + first, r.status) for r in upstream.log]
    if args.dump:
        raw = {"phases": phases, "results": results, "messages": watch.messages}
        _dump(args.dump, {**raw, "states": watch.states, "requests": requests})
    return report(n, total, phases, results, watch, final, requests, opened, killed_open, deadline)


def report(
    n: int,
    total: float,
    phases: list[tuple[str, float]],
    results: list[dict[str, Any]],
    watch: Watch,
    final: dict[str, Any],
    requests: list[tuple[float, int]],
    opened: float,
    killed_open: float,
    deadline: float,
) -> int:
    """Print the per-phase table and the promises; 1 if any promise failed, else 0."""
    bounds = [*(t for _, t in phases[1:]), float("inf")]
    # Rolling window for admissions: window + guard (what a slot holds), less 50 ms of slack
    # (slot times are the workers' wall times, not the store's clock).
    slot = WINDOW + GUARD - 0.05
    decisions = [d for r in results for d in r["decisions"]]
    # (slot time, share) of the admissions decided in the measured run (share 0: by Redis)
    t0 = phases[0][1]
    admissions = [(a[1], a[2]) for r in results for a in r["admissions"] if a[0] >= t0]
    events = [e for r in results for e in r["events"]]
    local_changes = [e for r in results for e in r["local_changes"]]
    reseeds = [t for r in results for t in r["reseeds"]]
    published = [m for m in watch.messages if m[2] != "*"]
    print(
        f"chaos soak: {n} processes x {TASKS} tasks, quota {QUOTA}/{WINDOW:g}s, {total:g}s, "
        f"store timeout {STORE_TIMEOUT}s, {CANCEL_SHARE:.0%} of jobs cancelled at random"
    )
    print(
        f"{'phase':<13} {'secs':>5} {'decisions':>9} {'local':>6} {'shared/win':>10} "
        f"{'local/win':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'brk max':>7} "
        f"{'redis tr':>8} {'events':>6}"
    )
    last = max((d[0] for d in decisions), default=0.0)
    worst = 0.0
    for (name, start), stop in zip(phases, bounds, strict=True):
        lim = [d for d in decisions if start <= d[0] < stop and d[3] == "limiter"]
        brk = [d[1] * 1000 for d in decisions if start <= d[0] < stop and d[3] == "breaker"]
        lat = [d[1] * 1000 for d in lim]
        shared = [t for t, share in admissions if start <= t < stop and not share]
        local = [t for t, share in admissions if start <= t < stop and share]
        tr = sum(1 for m in published if start <= m[0] < stop)
        tr -= sum(1 for t in reseeds if start <= t < stop)
        ev = sum(1 for e in events if start <= e[0] < stop)
        ev -= sum(1 for e in local_changes if start <= e[0] < stop)
        worst = max(worst, max(lat, default=0.0), max(brk, default=0.0))
        print(
            f"{name:<13} {min(stop, last) - start:>5.1f} {len(lim):>9} "
            f"{sum(1 for d in lim if d[2]):>6} {_max_in_window(shared, slot):>10} "
            f"{_max_in_window(local, slot):>9} {_pct(lat, 50):>7.2f} {_pct(lat, 99):>7.2f} "
            f"{max(lat, default=float('nan')):>7.2f} {max(brk, default=float('nan')):>7.2f} "
            f"{tr:>8} {ev:>6}"
        )
    jobs: Counter[str] = Counter()
    cancelled_at: Counter[str] = Counter()
    for r in results:
        jobs.update(r["jobs"])
        cancelled_at.update(r["cancelled_at"])
    print(
        f"jobs done {jobs['done']}, lost {jobs['lost']}, cancelled at random "
        f"{jobs['cancelled']}, cancelled at the end {jobs['cancelled at the end']}; "
        f"upstream 429s {jobs['429']}"
    )
    probes: Counter[str] = Counter()
    for r in results:
        probes.update(r["probes"])
    print(
        f"probe permits granted by Redis {probes['granted']}, of which cancelled while held "
        f"{probes['cancelled']} ({PROBE_CANCEL_SHARE:.0%} are cancelled within 20 ms)"
    )
    print(
        "cancellations landed in: " + ", ".join(f"{k} {v}" for k, v in cancelled_at.most_common())
    )
    statuses = Counter(s for _, s in requests)
    print(
        f"upstream: {len(requests)} requests, {statuses[200]} ok, {statuses[429]} answered 429, "
        f"{statuses[503]} answered 503"
    )
    for r in sorted(results, key=lambda r: r["idx"]):
        rss0, rss1 = r["rss"]
        tail = f"; {r['errors']}" if r["errors"] else ""
        print(f"worker {r['idx']}: RSS {rss0:.1f} MB -> {rss1:.1f} MB{tail}")

    # -- the promises
    checks: list[tuple[str, bool, str]] = []
    leaks = final["leases"] + final["future"]
    held = watch.max_hold()
    slots: Counter[str] = Counter()
    for r in results:
        slots.update(r["slot_checks"])
    checks.append(
        (
            "leaked permits = 0",
            leaks == 0 and not watch.expired_seen and held <= HOLD_LIMIT and not slots["leaked"],
            f"after the run: {final['leases']} probe leases ({final['leases_unexpired']} "
            f"unexpired), {final['future']} limiter entries in the future (log holds "
            f"{final['entries']}), breaker {final['state']}; during the run: "
            f"{len(watch.leases)} probe leases seen, longest held {held:.2f} s "
            f"(limit {HOLD_LIMIT:g} s), {len(watch.expired_seen)} seen expired; "
            f"{slots.total()} reservations cancelled in their slot wait, 0.5 s later: "
            + ", ".join(f"{k} {v}" for k, v in sorted(slots.items())),
        )
    )
    in_redis = len(published) - len(reseeds)
    unplanned = [t for t in watch.drops if not any(a <= t <= b for a, b in watch.down)]
    seen = len(events) - len(local_changes)
    by_state = Counter(m[2] for m in published) - Counter({"open": len(reseeds)})
    by_event = Counter(e[2] for e in events) - Counter(e[2] for e in local_changes)
    detail = ", ".join(f"{s} {by_state[s]}/{by_event[s]}" for s in ("open", "half_open", "closed"))
    checks.append(
        (
            "transitions in Redis = events seen",
            in_redis == seen and not unplanned,
            f"{in_redis} in Redis ({len(published)} published, {len(reseeds)} of them "
            f"re-seeds; {len(watch.messages) - len(published)} operator '*' excluded) vs "
            f"{seen} events ({len(events)} seen, {len(local_changes)} of them by the local "
            f"fallback breaker; {jobs[ORPHANED]} reported after their caller was cancelled); "
            f"by new state Redis/events: {detail}; parent's subscription "
            f"lost while Redis was up: {len(unplanned)} times",
        )
    )
    checks.append(
        (
            f"decision latency <= {BOUND * 1000:.0f} ms",
            worst <= BOUND * 1000,
            f"max {worst:.1f} ms over every phase (limiter and breaker decisions)",
        )
    )
    local_all = [t for t, share in admissions if share]
    outage = [
        t
        for (name, start), stop in zip(phases, bounds, strict=True)
        if name in OUTAGES
        for t in local_all
        if start <= t < stop
    ]
    fleet, at = _busiest(local_all, slot)
    where = next(
        (name for (name, start), stop in zip(phases, bounds, strict=True) if start <= at < stop),
        "",
    )
    # The share each worker applied in that window (its fair share of the quota).
    shares = [
        max((a[2] for a in r["admissions"] if at - slot < a[1] <= at and a[2]), default=0)
        for r in sorted(results, key=lambda r: r["idx"])
    ]
    checks.append(
        (
            f"over-admission <= {QUOTA}",
            fleet <= QUOTA,
            f"fleet-wide local admissions in any {slot:g} s window: "
            f"{_max_in_window(outage, slot)} during the outages, {fleet} over the whole run "
            f"(busiest window in phase {where!r}, shares applied there by worker: {shares}; "
            f"{len(local_all)} local admissions)",
        )
    )
    early = [t for t, _ in requests if killed_open <= t < deadline]
    before = [t for t, _ in requests if opened <= t < killed_open]
    # Every call the breaker admits reaches the limiter next: a limiter decision is an admission.
    admitted = [d for d in decisions if d[3] == "limiter" and opened + 0.1 <= d[0] < deadline]
    reseeded = next((s for s in watch.states if s[0] > killed_open and s[1] == "open"), None)
    how = (
        f"re-seeded open {reseeded[0] - killed_open:.2f} s after the kill "
        f"(generation {reseeded[2]}, {reseeded[3] / 1e6:.2f} s left)"
        if reseeded is not None
        else "never seen re-seeded"
    )
    checks.append(
        (
            "restart while open: 0 calls",
            not early and killed_open > 0,
            f"{len(early)} upstream requests from the kill to the deadline "
            f"({deadline - killed_open:.1f} s); breaker admissions from the open (+0.1 s) to "
            f"the deadline: {len(admitted)}; {len(before)} requests between the open and the "
            f"kill (slots reserved before the open); {how}",
        )
    )
    checks.append(("jobs lost = 0", jobs["lost"] == 0, f"{jobs['lost']} lost"))
    failed = 0
    print()
    for what, ok, text in checks:
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {text}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
