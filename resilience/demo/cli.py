"""``python -m resilience demo``: the command line of the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

__all__ = ["add_demo", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    """An argument parser with the ``demo`` command only (``resilience.__main__`` adds the
    operator commands)."""
    parser = argparse.ArgumentParser(
        prog="resilience",
        description="resilience: asyncio resilience for fleets of workers.",
    )
    add_demo(parser.add_subparsers(dest="command", required=True))
    return parser


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command to the subcommands ``sub``."""
    demo = sub.add_parser(
        "demo",
        help="replay the 429 story: the blog's naive code, then the resilience pipeline",
        description=(
            "Start a local upstream with a strict sliding window (50 requests per minute by "
            "default, answering 429 + Retry-After beyond it), drain a queue of jobs with a "
            "fleet of workers, first with the naive code of the blog post, then with "
            "Retry + CircuitBreaker + SlidingWindowLimiter, and compare."
        ),
    )
    demo.add_argument("--mode", choices=("naive", "resilience", "both"), default="both")
    demo.add_argument(
        "--api",
        choices=("analyze", "openai", "anthropic"),
        default="analyze",
        help=(
            "what the fleet calls: the demo's endpoint (default), or a fake OpenAI / Anthropic "
            "API through the real SDK (naive: the SDK's own retries; resilience: the SDK with "
            "max_retries=0 under the pipeline)"
        ),
    )
    demo.add_argument("--workers", type=int, default=4, help="workers (processes with --redis)")
    demo.add_argument("--tasks", type=int, default=8, help="concurrent tasks per worker")
    demo.add_argument("--jobs", type=int, default=300, help="jobs in the queue")
    demo.add_argument("--limit", type=int, default=50, help="upstream quota per minute")
    demo.add_argument(
        "--time-scale",
        type=float,
        default=30.0,
        help="story seconds per real second (default 30: a minute lasts 2 s)",
    )
    demo.add_argument(
        "--fail-rate", type=float, default=0.0, help="fraction of requests answered 503"
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="share state through this Redis; workers become processes",
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the upstream's 503 draw")
    demo.add_argument("--json", action="store_true", help="print the figures as JSON")
    demo.add_argument(
        "--otlp",
        action="store_true",
        help="export traces over OTLP (also enabled by OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--verbose", action="store_true", help="log every retry on stderr")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``resilience demo`` with ``argv`` (the arguments after the program's name)."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the ``demo`` command parsed into ``args``."""
    try:
        from resilience.demo.fleet import DemoConfig, Mode, run_demo
        from resilience.demo.report import Progress, render_json, render_table
    except ImportError as exc:  # aiohttp missing
        print(
            f"the demo needs the 'demo' extra: pip install 'resilience[demo]' ({exc})",
            file=sys.stderr,
        )
        return 2
    if args.api != "analyze":
        from resilience.demo._sdk import require_sdk

        try:
            require_sdk(args.api)
        except ImportError as exc:
            print(f"resilience demo: {exc}", file=sys.stderr)
            return 2
    try:
        cfg = DemoConfig(
            limit=args.limit,
            time_scale=args.time_scale,
            workers=args.workers,
            tasks=args.tasks,
            jobs=args.jobs,
            fail_rate=args.fail_rate,
            redis_url=args.redis,
            seed=args.seed,
            otlp=args.otlp or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")),
            verbose=args.verbose,
            api=args.api,
        )
    except ValueError as exc:
        print(f"resilience demo: {exc}", file=sys.stderr)
        return 2
    modes: tuple[Mode, ...] = ("naive", "resilience") if args.mode == "both" else (args.mode,)
    progress = None if args.quiet else Progress().for_mode
    results = asyncio.run(run_demo(cfg, modes, progress=progress))
    print(render_json(cfg, results) if args.json else render_table(cfg, results))
    return 0
