"""The fake AI server's figures: one :class:`AICall` per request, and :class:`AIStats` of a run
(computed from the calls by :func:`ai_stats`)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from resilience.demo.ai._wire import Provider
from resilience.demo.upstream import UpstreamStats

__all__ = ["AICall", "AIStats", "ai_stats"]


@dataclass(frozen=True)
class AICall:
    """One request seen by the fake server.

    Attributes:
        t: arrival time, seconds since the server started (its own clock).
        provider: ``"openai"`` or ``"anthropic"``.
        status: the status answered (a stream that failed midway is a 200).
        kind: ``"ok"`` (admitted), ``"quota"`` (a 429 of the quota), ``"fault"`` (a scripted or
            ``fail_rate`` error), ``"stream_error"`` (admitted, then an error event),
            ``"invalid"`` (a malformed request or a wrong key).
        input_tokens, output_tokens: the call's tokens (billed only when admitted).
        retry_count: the ``x-stainless-retry-count`` header sent, or ``None``.
        stream: whether a stream was asked for.
    """

    t: float
    provider: Provider
    status: int
    kind: str
    input_tokens: int = 0
    output_tokens: int = 0
    retry_count: int | None = None
    stream: bool = False


@dataclass(frozen=True)
class AIStats:
    """Figures of a run, as the fake server saw it.

    Attributes:
        limit, window, token_limit: the enforced quotas (``token_limit`` may be ``None``).
        requests: every request to the two endpoints.
        ok: admitted calls (including streams that then failed midway).
        by_status: answers per status.
        by_provider: requests per provider.
        quota_429: 429s of the quota (not the scripted ones).
        faults: scripted or ``fail_rate`` error answers.
        stream_errors: streams ended by an error event.
        max_in_window: the most admissions in any rolling window (at most ``limit``; the other
            tenant's are not counted).
        max_tokens_in_window: the most tokens admitted in any rolling window.
        input_tokens, output_tokens, total_tokens: tokens of the admitted calls.
        retry_counts: how many requests carried each ``x-stainless-retry-count`` value.
        sdk_retries: requests whose ``x-stainless-retry-count`` was above 0.
        other_tenant: admissions taken by the other client (``exhaust_every``).
        elapsed: seconds from the first to the last request.
        goodput: admissions over what the quota allowed in ``elapsed`` (as the demo upstream).
    """

    limit: int
    window: float
    token_limit: int | None
    requests: int
    ok: int
    by_status: dict[int, int]
    by_provider: dict[str, int]
    quota_429: int
    faults: int
    stream_errors: int
    max_in_window: int
    max_tokens_in_window: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    retry_counts: dict[int, int]
    sdk_retries: int
    other_tenant: int
    elapsed: float
    goodput: float

    @property
    def rate_limited(self) -> int:
        """Every 429 answered (quota and scripted)."""
        return self.by_status.get(429, 0)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON (int keys as strings)."""
        d = asdict(self)
        d["by_status"] = {str(k): v for k, v in self.by_status.items()}
        d["retry_counts"] = {str(k): v for k, v in self.retry_counts.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AIStats:
        """The inverse of :meth:`to_dict`."""
        d = dict(data)
        d["by_status"] = {int(k): v for k, v in d["by_status"].items()}
        d["retry_counts"] = {int(k): v for k, v in d["retry_counts"].items()}
        return cls(**d)


def ai_stats(
    calls: Sequence[AICall],
    base: UpstreamStats,
    *,
    token_limit: int | None,
    other_tenant: int,
) -> AIStats:
    """The figures of ``calls``; the request window's (``limit``, ``window``, ``max_in_window``,
    ``elapsed``, ``goodput``) are ``base``'s, the demo upstream's
    :meth:`~resilience.demo.upstream.Upstream.stats` of the same run."""
    window = base.window
    admitted = [c for c in calls if c.kind in ("ok", "stream_error")]
    times = [c.t for c in admitted]
    cum = [0]
    for c in admitted:
        cum.append(cum[-1] + c.input_tokens + c.output_tokens)
    max_tokens = 0
    for i, t in enumerate(times):
        j = bisect.bisect_right(times, t - window)
        max_tokens = max(max_tokens, cum[i + 1] - cum[j])
    retry_counts = Counter(c.retry_count for c in calls if c.retry_count is not None)
    inp = sum(c.input_tokens for c in admitted)
    out = sum(c.output_tokens for c in admitted)
    return AIStats(
        limit=base.limit,
        window=window,
        token_limit=token_limit,
        requests=len(calls),
        ok=len(admitted),
        by_status=dict(sorted(Counter(c.status for c in calls).items())),
        by_provider=dict(sorted(Counter(c.provider for c in calls).items())),
        quota_429=sum(1 for c in calls if c.kind == "quota"),
        faults=sum(1 for c in calls if c.kind == "fault"),
        stream_errors=sum(1 for c in calls if c.kind == "stream_error"),
        max_in_window=base.max_in_window,
        max_tokens_in_window=max_tokens,
        input_tokens=inp,
        output_tokens=out,
        total_tokens=inp + out,
        retry_counts=dict(sorted(retry_counts.items())),
        sdk_retries=sum(n for k, n in retry_counts.items() if k > 0),
        other_tenant=other_tenant,
        elapsed=base.elapsed,
        goodput=base.goodput,
    )
