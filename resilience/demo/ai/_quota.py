"""The fake AI server's quotas: the sliding windows of requests and tokens, the other tenant
that exhausts them, the decision of each call, and the rate-limit headers they advertise.

:class:`QuotaUpstream` is the part of :class:`~resilience.demo.ai.AIUpstream` that knows no
HTTP: the demo upstream's window of ``limit`` requests per ``window`` seconds (its
``_admitted`` deque, shared with the demo's ``/v1/analyze``), plus one :class:`TokenQuota` per
configured token limit, all evicted together on the server's own clock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from resilience.demo.ai._wire import Provider, go_duration, rfc3339
from resilience.demo.upstream import RequestRecord, Upstream

__all__ = ["Admission", "QuotaUpstream", "TokenQuota", "check_int"]


@dataclass
class Admission:
    """The decision of one call: 200, 429 (which quota, its figures, the wait) or 503."""

    status: int
    wait: float = 0.0
    quota: str | None = None  # the exhausted quota: "requests", "tokens", "input_tokens", ...
    limit: int = 0
    used: int = 0
    requested: int = 0


@dataclass
class TokenQuota:
    """One token quota's sliding window: ``(time, tokens)`` of each admission in it."""

    name: str  # "tokens", "input_tokens", "output_tokens"
    limit: int
    advertised: int
    used: int = 0
    log: deque[tuple[float, int]] = field(default_factory=deque)

    def need(self, inp: int, out: int) -> int:
        return {"tokens": inp + out, "input_tokens": inp, "output_tokens": out}[self.name]

    def evict(self, horizon: float) -> None:
        while self.log and self.log[0][0] <= horizon:
            self.used -= self.log.popleft()[1]

    def wait_for(self, need: int, now: float, window: float) -> float:
        """Seconds until ``need`` more tokens fit (``math.inf`` if they never can)."""
        if need > self.limit:
            return math.inf
        used = self.used
        for t, n in self.log:
            used -= n
            if used + need <= self.limit:
                return max(0.0, t + window - now)
        return 0.0  # pragma: no cover - the loop empties the window

    def add(self, t: float, n: int) -> None:
        if n > 0:
            self.log.append((t, n))
            self.used += n


def check_int(name: str, v: object, *, optional: bool = True) -> None:
    """``ValueError`` unless ``v`` is an int >= 1 (or ``None`` when ``optional``)."""
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an int >= 1{' or None' if optional else ''}, got {v!r}")


@dataclass
class QuotaUpstream(Upstream):
    """The demo upstream's request window with token quotas and another tenant (the arguments
    are documented on :class:`~resilience.demo.ai.AIUpstream`)."""

    token_limit: int | None = None
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    advertised_limit: int | None = None
    advertised_token_limit: int | None = None
    exhaust_every: float | None = None
    _quotas: list[TokenQuota] = field(default_factory=list, init=False, repr=False)
    _next_exhaust: float = field(default=math.inf, init=False, repr=False)
    _other: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("token_limit", "input_token_limit", "output_token_limit"):
            check_int(name, getattr(self, name))
        check_int("advertised_limit", self.advertised_limit)
        check_int("advertised_token_limit", self.advertised_token_limit)
        if self.exhaust_every is not None and not (
            isinstance(self.exhaust_every, (int, float)) and 0 < self.exhaust_every < math.inf
        ):
            raise ValueError(
                f"exhaust_every must be seconds > 0 or None, got {self.exhaust_every!r}"
            )
        self._quotas = [
            TokenQuota(name, lim, (self.advertised_token_limit or lim) if name == "tokens" else lim)
            for name, lim in (
                ("tokens", self.token_limit),
                ("input_tokens", self.input_token_limit),
                ("output_tokens", self.output_token_limit),
            )
            if lim is not None
        ]
        if self.exhaust_every is not None:
            self._next_exhaust = self._t0 + self.exhaust_every

    # -- the decision -------------------------------------------------------------------------

    def _other_tenant(self, now: float) -> None:
        """Apply the other client's fills due by ``now`` (each at its own time)."""
        every = self.exhaust_every
        if every is None:
            return
        while self._next_exhaust <= now:
            tb = self._next_exhaust
            self._next_exhaust += every
            if tb <= now - self.window:
                continue  # long gone by now
            self._evict(tb - self.window)
            take = self.limit - len(self._admitted)
            self._admitted.extend([tb] * max(0, take))
            self._other += max(0, take)
            for q in self._quotas:
                q.add(tb, q.limit - q.used)

    def _evict(self, horizon: float) -> None:
        admitted = self._admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        for q in self._quotas:
            q.evict(horizon)

    def decide(self) -> tuple[int, float]:
        """The demo endpoint's decision (:meth:`Upstream.decide`), after the other tenant."""
        self._other_tenant(self.clock())
        return super().decide()

    def admit(self, input_tokens: int, output_tokens: int) -> Admission:
        """Decide one call with these tokens arriving now (recorded in :attr:`log`)."""
        now = self.clock()
        self._other_tenant(now)
        t = now - self._t0
        if self.fail_rate and self._rng.random() < self.fail_rate:
            self.log.append(RequestRecord(t, 503))
            return Admission(503)
        self._evict(now - self.window)
        worst = Admission(200)
        if len(self._admitted) >= self.limit:
            worst = Admission(
                429,
                self._admitted[0] + self.window - now,
                "requests",
                self.limit,
                len(self._admitted),
                1,
            )
        for q in self._quotas:
            need = q.need(input_tokens, output_tokens)
            if q.used + need > q.limit:
                wait = q.wait_for(need, now, self.window)
                if worst.status == 200 or wait > worst.wait:
                    worst = Admission(429, wait, q.name, q.limit, q.used, need)
        if worst.status == 429:
            if math.isinf(worst.wait):
                worst.wait = self.window  # larger than the quota: never admitted
            self.log.append(RequestRecord(t, 429))
            return worst
        self._admitted.append(now)
        for q in self._quotas:
            q.add(now, q.need(input_tokens, output_tokens))
        self._ok += 1
        self.log.append(RequestRecord(t, 200))
        return worst

    # -- headers ------------------------------------------------------------------------------

    def _reset(self, oldest: float | None, now: float) -> float:
        return 0.0 if oldest is None else max(0.0, oldest + self.window - now)

    def rate_limit_headers(self, provider: Provider) -> dict[str, str]:
        """The provider's rate-limit headers for the quotas' state now.

        Limits and remaining counts are per minute, as the providers report them: this
        server's window is its minute (a window of 2 s is a minute at time scale 30), so each
        count is scaled by ``60 / window`` (unchanged for a 60 s window). A client that scales
        a provider's per-minute limit to its own window (the limiter's ``follow_upstream``)
        gets this server's per-window limit back. Resets are in real seconds.
        """
        per_minute = 60.0 / self.window
        now = self.clock()
        self._evict(now - self.window)
        adv = self.advertised_limit or self.limit
        n = len(self._admitted)
        req_reset = self._reset(self._admitted[0] if self._admitted else None, now)
        quotas = [("requests", adv, max(0, adv - n), req_reset)]
        for q in self._quotas:
            oldest = q.log[0][0] if q.log else None
            quotas.append(
                (q.name, q.advertised, max(0, q.advertised - q.used), self._reset(oldest, now))
            )
        h: dict[str, str] = {}
        if provider == "openai":
            for name, limit, remaining, reset in quotas:
                if name not in ("requests", "tokens"):
                    continue
                limit, remaining = round(limit * per_minute), round(remaining * per_minute)
                h[f"x-ratelimit-limit-{name}"] = str(limit)
                h[f"x-ratelimit-remaining-{name}"] = str(remaining)
                h[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        else:
            wall = time.time()
            for name, limit, remaining, reset in quotas:
                limit, remaining = round(limit * per_minute), round(remaining * per_minute)
                prefix = "anthropic-ratelimit-" + name.replace("_", "-")
                h[f"{prefix}-limit"] = str(limit)
                h[f"{prefix}-remaining"] = str(remaining)
                h[f"{prefix}-reset"] = rfc3339(wall + reset)
        return h
