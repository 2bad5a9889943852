"""The demo's parameters (:class:`DemoConfig`) and figures (:class:`ModeResult`).

Re-exported by :mod:`resilience.demo.fleet`, the demo's public module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["APIS", "MAX_REQUEUES", "DemoApi", "DemoConfig", "Mode", "ModeResult", "ProgressFn"]

Mode = Literal["naive", "resilience"]
#: What the fleet calls: the demo's ``/v1/analyze`` over aiohttp, or the fake OpenAI or
#: Anthropic API through the real SDK.
DemoApi = Literal["analyze", "openai", "anthropic"]
APIS: tuple[DemoApi, ...] = ("analyze", "openai", "anthropic")
#: How many times the resilience mode puts a job back on the queue before reporting it failed.
MAX_REQUEUES = 5
#: ``progress(done, total)``: called about ten times a second while a mode runs.
ProgressFn = Callable[[int, int], None]


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
        api: ``"analyze"`` (the demo's endpoint, aiohttp), or ``"openai"`` / ``"anthropic"``:
            the fake AI server (:mod:`resilience.demo.ai`) through the real SDK, naive being
            the SDK's defaults (its own retries) and resilience the SDK with ``max_retries=0``
            under the pipeline of docs/ai.md.
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
    api: DemoApi = "analyze"

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {self.api!r}")
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
