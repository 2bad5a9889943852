"""The demo's scenario as a benchmark: goodput against a strict upstream, naive vs resilience.

A strict upstream of 50 requests per rolling window (2 s by default: a "minute" at time scale
30), 4 worker processes x 8 tasks sharing a real redis-server (started here on a free loopback
port), a queue of jobs drained first by the blog post's code, then by
``Pipeline(Retry, CircuitBreaker, SlidingWindowLimiter)`` with the library's defaults.

Targets (issue 6): the resilience pipeline reaches >= 90 % of the quota as goodput with
<= 1 % of requests answered 429 and no job lost. Writes a PNG of admitted requests per window
for both approaches to ``docs/img/demo_goodput.png``.

    .venv/bin/python benchmarks/demo_goodput.py [--jobs 500] [--window 2.0] [--fail-rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resilience.demo.fleet import DemoConfig, ModeResult, run_demo  # noqa: E402
from tests.redis_servers import RedisServer  # noqa: E402


def plot(results: list[ModeResult], cfg: DemoConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    n = max(len(r.admitted_per_window) for r in results)
    width = 0.4
    for i, r in enumerate(results):
        xs = [k + (i - 0.5) * width for k in range(len(r.admitted_per_window))]
        label = f"{r.mode}: goodput {r.goodput:.0%}, {r.upstream_429} x 429, {r.lost} lost"
        ax.bar(xs, r.admitted_per_window, width=width, label=label)
    ax.axhline(cfg.limit, color="black", linestyle="--", linewidth=1, label="quota per window")
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xlabel(f"window ({cfg.window:g} s each, from each run's first request)")
    ax.set_ylabel("requests admitted (200)")
    ax.set_title(
        f"Strict upstream, {cfg.limit} per {cfg.window:g} s; {cfg.workers} processes x "
        f"{cfg.tasks} tasks sharing Redis; {cfg.jobs} jobs"
    )
    ax.legend(loc="lower center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--window", type=float, default=2.0, help="upstream window, seconds")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "demo_goodput.png")
    args = parser.parse_args()
    if args.window < 2.0:
        print("note: windows under 2 s make the latency guard cost more than at a real minute")

    with RedisServer() as server:
        cfg = DemoConfig(
            limit=50,
            time_scale=60.0 / args.window,
            workers=args.workers,
            tasks=args.tasks,
            jobs=args.jobs,
            fail_rate=args.fail_rate,
            redis_url=server.url,
        )
        t0 = time.monotonic()
        results = asyncio.run(run_demo(cfg))
        total = time.monotonic() - t0

    print(
        f"strict upstream {cfg.limit} per {cfg.window:g} s, {cfg.workers} processes x "
        f"{cfg.tasks} tasks sharing redis-server, {cfg.jobs} jobs, fail rate {cfg.fail_rate:g}"
    )
    print(
        f"{'mode':<11} {'done':>5} {'lost':>5} {'requests':>8} {'429s':>6} {'429 %':>6} "
        f"{'goodput':>7} {'max/win':>7} {'wall s':>7}"
    )
    for r in results:
        print(
            f"{r.mode:<11} {r.completed:>5} {r.lost:>5} {r.requests:>8} {r.upstream_429:>6} "
            f"{r.share_429:>6.1%} {r.goodput:>7.1%} {r.max_in_window:>7} {r.wall_time:>7.1f}"
        )
    naive, res = results
    if naive.goodput:
        print(f"goodput ratio resilience / naive: {res.goodput / naive.goodput:.2f}")
    print(f"jobs lost: naive {naive.lost}, resilience {res.lost}; total run {total:.0f} s")
    for r in results:
        print(f"admitted per window, {r.mode}: {r.admitted_per_window}")
    plot(results, cfg, args.png)
    print(f"plot: {args.png.relative_to(ROOT) if args.png.is_relative_to(ROOT) else args.png}")
    ok = res.goodput >= 0.9 and res.share_429 <= 0.01 and res.lost == 0
    print("targets (goodput >= 90 %, 429s <= 1 %, no job lost):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
