"""Live progress on stderr and the final side-by-side table of the demo."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from resilience.demo.fleet import DemoConfig, ModeResult, ProgressFn

__all__ = ["Progress", "render_json", "render_table"]


class Progress:
    """A progress bar per run on ``stream`` (stderr by default).

    On a terminal the bar is redrawn in place; otherwise (CI logs, pipes) one line is printed
    at every 25 % so logs stay short.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def for_mode(self, mode: str) -> ProgressFn:
        """The callback ``(done, total)`` for one run."""
        started = time.monotonic()
        last_quarter = -1
        finished = False

        def update(done: int, total: int) -> None:
            nonlocal last_quarter, finished
            if finished:
                return
            elapsed = time.monotonic() - started
            if self.tty:
                filled = int(self.width * done / total) if total else self.width
                bar = "#" * filled + "." * (self.width - filled)
                end = "\n" if done >= total else ""
                self.stream.write(f"\r{mode:>10} [{bar}] {done}/{total} jobs {elapsed:5.1f}s{end}")
            else:
                quarter = (4 * done // total) if total else 4
                if quarter > last_quarter:
                    last_quarter = quarter
                    self.stream.write(f"{mode:>10}: {done}/{total} jobs {elapsed:5.1f}s\n")
            self.stream.flush()
            finished = done >= total

        return update


_ROWS: list[tuple[str, str]] = [
    ("jobs completed", "completed"),
    ("jobs lost", "lost"),
    ("requests sent", "requests"),
    ("retries", "retries"),
    ("upstream 429s", "upstream_429"),
    ("upstream 503s", "upstream_503"),
    ("breaker trips", "breaker_trips"),
    ("goodput (of quota)", "goodput"),
    ("max in one window", "max_in_window"),
    ("wall time", "wall_time"),
]


_API_LINES = {
    api: (
        f"client: the real {api} SDK; naive: its defaults (max_retries=2), resilience: "
        "max_retries=0 under the pipeline\n"
    )
    for api in ("openai", "anthropic")
}


def _cell(r: ModeResult, attr: str) -> str:
    if attr == "goodput":
        return f"{r.goodput:.0%}"
    if attr == "wall_time":
        return f"{r.wall_time:.1f} s"
    if attr == "upstream_429":
        return f"{r.upstream_429} ({r.share_429:.1%})"
    if attr == "lost":
        return str(r.lost)
    return str(getattr(r, attr))


def render_table(cfg: DemoConfig, results: Sequence[ModeResult]) -> str:
    """The side-by-side table, with the reasons of lost jobs underneath."""
    where = f"Redis {cfg.redis_url}" if cfg.redis_url else "in-process (memory store)"
    api = "" if cfg.api == "analyze" else _API_LINES[cfg.api]
    head = (
        f"upstream: {cfg.limit} requests per window of {cfg.window:g} s (a minute at time "
        f"scale {cfg.time_scale:g}), fail rate {cfg.fail_rate:g}\n{api}"
        f"fleet: {cfg.workers} workers x {cfg.tasks} tasks, {cfg.jobs} jobs, {where}\n\n"
    )
    names = [r.mode for r in results]
    w0 = max(len(label) for label, _ in _ROWS)
    cells = [[_cell(r, attr) for r in results] for _, attr in _ROWS]
    widths = [max(len(names[i]), *(len(row[i]) for row in cells)) for i in range(len(results))]
    lines = ["  ".join([" " * w0, *(n.rjust(w) for n, w in zip(names, widths, strict=True))])]
    lines.append("  ".join(["-" * w0, *("-" * w for w in widths)]))
    for (label, _), row in zip(_ROWS, cells, strict=True):
        lines.append(
            "  ".join([label.ljust(w0), *(c.rjust(w) for c, w in zip(row, widths, strict=True))])
        )
    out = head + "\n".join(lines) + "\n"
    for r in results:
        if r.lost_reasons:
            reasons = ", ".join(f"{n} x {why}" for why, n in r.lost_reasons.items())
            out += f"\n{r.mode}: lost jobs by reason: {reasons}"
    return out + ("\n" if any(r.lost_reasons for r in results) else "")


def render_json(cfg: DemoConfig, results: Sequence[ModeResult]) -> str:
    """The same figures as JSON: ``{"config": {...}, "results": {mode: {...}}}``."""
    config = {
        "limit": cfg.limit,
        "window": cfg.window,
        "time_scale": cfg.time_scale,
        "workers": cfg.workers,
        "tasks": cfg.tasks,
        "jobs": cfg.jobs,
        "fail_rate": cfg.fail_rate,
        "redis": cfg.redis_url is not None,
        "api": cfg.api,
    }
    return json.dumps(
        {"config": config, "results": {r.mode: r.to_dict() for r in results}}, indent=2
    )
