"""A local, strict, rate-limited upstream: the "AI API" of the demo and of the benchmarks.

It behaves like the API of the blog post that started this project: a **strict sliding window**
of ``limit`` requests per ``window`` seconds, measured on the upstream's *own* clock. A request
arriving when ``limit`` requests were already admitted in the last ``window`` seconds is answered
``429 Too Many Requests`` with a ``Retry-After`` header (integer delay-seconds, rounded up, as
RFC 9110 requires) and the IETF ``RateLimit`` / ``RateLimit-Policy`` fields. Optionally a fraction
``fail_rate`` of requests is answered ``503 Service Unavailable`` (decided before the quota check:
a 503 does not consume quota).

Only admitted requests (answered 200) enter the window: a rejected request costs the client a
round trip but no quota, as with most real APIs. Every request is recorded with its arrival time
and its status, so a run can be judged afterwards (:meth:`Upstream.stats`): goodput, number of
429s, the maximum number of admissions seen in any window (never more than ``limit``, by
construction).

Usage::

    url, stop = await start_upstream(limit=50, window=2.0)
    ...  # POST/GET f"{url}/v1/analyze"
    stats = await stop()          # stops the server, returns the final UpstreamStats

The endpoint is ``/v1/analyze`` (any method; the body is ignored; the answer is JSON
``{"ok": true, "n": <admission number>}``). ``GET /stats`` returns :meth:`Upstream.stats` as JSON
(so worker processes or a benchmark can read the figures over HTTP).
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

__all__ = [
    "ANALYZE_PATH",
    "RequestRecord",
    "Upstream",
    "UpstreamServer",
    "UpstreamStats",
    "start_upstream",
]

#: The path of the rate-limited endpoint.
ANALYZE_PATH = "/v1/analyze"


@dataclass(frozen=True)
class RequestRecord:
    """One request seen by the upstream.

    Attributes:
        t: arrival time in seconds since the upstream started (its own clock).
        status: the status answered (200, 429 or 503).
    """

    t: float
    status: int


@dataclass(frozen=True)
class UpstreamStats:
    """Figures of a run, as seen by the upstream (the ground truth of the demo).

    Attributes:
        limit, window: the quota (``limit`` admissions per rolling ``window`` seconds).
        requests: every request received.
        ok: requests admitted (answered 200).
        rejected_429: requests answered 429.
        failed_503: requests answered 503 (the injected failures).
        elapsed: seconds from the first to the last request (0 with fewer than 2 requests).
        max_in_window: the largest number of admissions in any rolling window (≤ ``limit``).
        quota_capacity: the admissions the quota allows over ``elapsed`` for a client that
            starts with a full quota and then uses it continuously:
            ``limit * (elapsed / window + 1)``.
        goodput: ``ok / quota_capacity`` (0 when nothing was requested).
    """

    limit: int
    window: float
    requests: int
    ok: int
    rejected_429: int
    failed_503: int
    elapsed: float
    max_in_window: int
    quota_capacity: float
    goodput: float

    def to_dict(self) -> dict[str, Any]:
        """The stats as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class Upstream:
    """The state and the aiohttp application of a strict sliding-window upstream.

    Args:
        limit: admissions allowed per rolling window (≥ 1).
        window: window length in seconds (> 0).
        fail_rate: probability in [0, 1) that a request is answered 503 (before the quota check,
            so it consumes no quota).
        seed: seed of the failure draw (reproducible runs).
        clock: monotonic clock in seconds; ``time.monotonic`` by default.

    Admission rule (exact, no tolerance): a request arriving at ``t`` is admitted iff fewer than
    ``limit`` requests were admitted at times ``> t - window``.
    """

    limit: int = 50
    window: float = 60.0
    fail_rate: float = 0.0
    seed: int | None = None
    clock: Callable[[], float] = time.monotonic
    log: list[RequestRecord] = field(default_factory=list, init=False)
    _admitted: deque[float] = field(default_factory=deque, init=False, repr=False)
    _t0: float = field(default=0.0, init=False, repr=False)
    _ok: int = field(default=0, init=False, repr=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {self.limit!r}")
        if not (isinstance(self.window, (int, float)) and self.window > 0):
            raise ValueError(f"window must be a number of seconds > 0, got {self.window!r}")
        if not (isinstance(self.fail_rate, (int, float)) and 0 <= self.fail_rate < 1):
            raise ValueError(f"fail_rate must be in [0, 1), got {self.fail_rate!r}")
        self._t0 = self.clock()
        self._rng = random.Random(self.seed)

    # -- the decision -------------------------------------------------------------------------

    def decide(self) -> tuple[int, float]:
        """Decide one request arriving now: ``(status, retry_after_seconds)``.

        ``retry_after_seconds`` is the exact time until a slot frees (0 unless the status is 429).
        The request is recorded in :attr:`log`.
        """
        now = self.clock()
        t = now - self._t0
        if self.fail_rate and self._rng.random() < self.fail_rate:
            self.log.append(RequestRecord(t, 503))
            return 503, 0.0
        horizon = now - self.window
        admitted = self._admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) < self.limit:
            admitted.append(now)
            self._ok += 1
            self.log.append(RequestRecord(t, 200))
            return 200, 0.0
        self.log.append(RequestRecord(t, 429))
        return 429, max(0.0, admitted[0] + self.window - now)

    # -- the web app --------------------------------------------------------------------------

    async def _analyze(self, request: web.Request) -> web.Response:
        status, wait = self.decide()
        policy = f'"default";q={self.limit};w={max(1, math.ceil(self.window))}'
        headers = {"RateLimit-Policy": policy, "Date": formatdate(usegmt=True)}
        if status == 200:
            headers["RateLimit"] = f'"default";r={self.limit - len(self._admitted)}'
            return web.json_response({"ok": True, "n": self._ok}, headers=headers)
        if status == 429:
            secs = max(1, math.ceil(wait))  # delay-seconds is a non-negative integer (RFC 9110)
            headers["Retry-After"] = str(secs)
            headers["RateLimit"] = f'"default";r=0;t={secs}'
            return web.json_response(
                {"error": "rate_limited", "retry_after": wait}, status=429, headers=headers
            )
        return web.json_response({"error": "unavailable"}, status=503, headers=headers)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats().to_dict())

    def make_app(self) -> web.Application:
        """The aiohttp application: ``/v1/analyze`` (any method) and ``GET /stats``."""
        app = web.Application()
        app.router.add_route("*", ANALYZE_PATH, self._analyze)
        app.router.add_get("/stats", self._stats)
        return app

    # -- the figures --------------------------------------------------------------------------

    def admitted_times(self) -> list[float]:
        """Arrival times (seconds since start) of the admitted requests, ascending."""
        return [r.t for r in self.log if r.status == 200]

    def stats(self) -> UpstreamStats:
        """Figures of the run so far (see :class:`UpstreamStats`)."""
        log = self.log
        ok_times = self.admitted_times()
        elapsed = (log[-1].t - log[0].t) if len(log) >= 2 else 0.0
        max_in = 0
        for i, t in enumerate(ok_times):
            # admissions in (t - window, t]: the window ending at this admission
            j = bisect.bisect_right(ok_times, t - self.window)
            max_in = max(max_in, i - j + 1)
        capacity = self.limit * (elapsed / self.window + 1) if log else 0.0
        ok = len(ok_times)
        return UpstreamStats(
            limit=self.limit,
            window=float(self.window),
            requests=len(log),
            ok=ok,
            rejected_429=sum(1 for r in log if r.status == 429),
            failed_503=sum(1 for r in log if r.status == 503),
            elapsed=elapsed,
            max_in_window=max_in,
            quota_capacity=capacity,
            goodput=(ok / capacity) if capacity else 0.0,
        )

    def admitted_per_window(self) -> list[int]:
        """Admissions counted in consecutive fixed windows ``[k*window, (k+1)*window)`` from the
        first request (for plots)."""
        if not self.log:
            return []
        start = self.log[0].t
        counts: list[int] = []
        for t in self.admitted_times():
            k = int((t - start) // self.window)
            while len(counts) <= k:
                counts.append(0)
            counts[k] += 1
        return counts


class UpstreamServer:
    """A running :class:`Upstream`; awaiting the object itself (``await stop()``) stops it.

    Attributes:
        upstream: the :class:`Upstream` (live state and figures).
        url: the base URL, e.g. ``http://127.0.0.1:41234``.
    """

    def __init__(self, upstream: Upstream, runner: web.AppRunner, url: str) -> None:
        self.upstream = upstream
        self.url = url
        self._runner = runner
        self._stopped = False

    async def __call__(self) -> UpstreamStats:
        """Stop serving (idempotent) and return the final figures."""
        if not self._stopped:
            self._stopped = True
            await self._runner.cleanup()
        return self.upstream.stats()


async def start_upstream(
    limit: int = 50,
    window: float = 60.0,
    fail_rate: float = 0.0,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, UpstreamServer]:
    """Start a strict sliding-window upstream on ``host:port`` (``port=0``: a free port).

    Returns ``(url, stop)``: the base URL (the endpoint is ``url + ANALYZE_PATH``) and an
    :class:`UpstreamServer`; ``await stop()`` stops the server and returns the final
    :class:`UpstreamStats`, and ``stop.upstream`` gives the live state. Must be called from a
    running event loop; the server runs on that loop.
    """
    upstream = Upstream(limit=limit, window=window, fail_rate=fail_rate, seed=seed, clock=clock)
    runner = web.AppRunner(upstream.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    actual_port = sockets[0].getsockname()[1] if sockets else port
    url = f"http://{host}:{actual_port}"
    return url, UpstreamServer(upstream, runner, url)
