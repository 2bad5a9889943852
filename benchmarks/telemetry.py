"""Telemetry cost: happy-path overhead per call, telemetry absent vs an SDK that drops spans.

Run: ``.venv/bin/python benchmarks/telemetry.py`` (about a minute; ``--quick`` for ~15 s).

Every row is one pipeline; every column one telemetry setup, measured side by side in the
same process, interleaved round by round (the median of the rounds is reported):

- ``absent``: no SDK at all (the API's proxy providers): what every user without
  OpenTelemetry pays;
- ``sdk-simple``: SDK ``TracerProvider`` + ``SimpleSpanProcessor`` into an exporter that
  drops everything (the cost of creating, filling and ending spans);
- ``sdk-batch``: the same with a ``BatchSpanProcessor`` (what production uses);
- ``sdk-batch+metrics``: plus an SDK ``MeterProvider`` with a reader (metrics recorded).

Also measured: the bare hooks (``instrument_call`` + ``instrument_attempt``) around a no-op
coroutine, against awaiting it directly, to show what "absent" costs by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import resilience
from resilience import CallContext, MemoryStore, Pipeline, SlidingWindowLimiter, telemetry


class DropExporter(SpanExporter):
    """Accepts every span and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


Mode = tuple[str, Callable[[], None], Callable[[], None]]


def make_modes() -> list[Mode]:
    """(name, enter, exit) per telemetry setup; enter installs it through configure()."""
    modes: list[Mode] = [("absent", telemetry.configure, telemetry.configure)]

    def sdk(batch: bool, metrics: bool) -> Callable[[], None]:
        def enter() -> None:
            tp = TracerProvider()
            proc = (
                BatchSpanProcessor(DropExporter()) if batch else SimpleSpanProcessor(DropExporter())
            )
            tp.add_span_processor(proc)
            mp = MeterProvider(metric_readers=[InMemoryMetricReader()]) if metrics else None
            telemetry.configure(tracer_provider=tp, meter_provider=mp)
            _live.append((tp, mp))

        return enter

    def leave() -> None:
        telemetry.configure()
        while _live:
            tp, mp = _live.pop()
            tp.shutdown()
            if mp is not None:
                mp.shutdown()

    modes.append(("sdk-simple", sdk(False, False), leave))
    modes.append(("sdk-batch", sdk(True, False), leave))
    modes.append(("sdk-batch+metrics", sdk(True, True), leave))
    return modes


_live: list[tuple[TracerProvider, MeterProvider | None]] = []


async def work() -> int:
    return 1


def make_pipelines() -> list[tuple[str, Callable[[], Awaitable[int]]]]:
    store = MemoryStore()
    # A limit that is never reached and a short window: the limiter decides, never waits.
    limiter = SlidingWindowLimiter(10**6, 0.01, store=store, name="bench", guard=0)
    rows: list[tuple[str, Callable[[], Awaitable[int]]]] = [
        ("Pipeline() (no policy)", Pipeline(name="noop")(work)),
        ("Pipeline(limiter, memory store)", Pipeline(limiter, name="limited")(work)),
    ]
    if hasattr(resilience, "Retry"):
        retry = resilience.Retry(3)
        rows.append(("Pipeline(Retry(3))", Pipeline(retry, name="retried")(work)))
        rows.append(("Pipeline(Retry(3), limiter)", Pipeline(retry, limiter, name="both")(work)))
    return rows


async def per_call_us(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n * 1e6


async def hooks_absent_us(n: int) -> tuple[float, float]:
    """(bare await of a no-op, the same through both hooks) with telemetry absent."""
    ctx = CallContext("hooks")

    async def through_hooks() -> int:
        return await telemetry.instrument_call(lambda: telemetry.instrument_attempt(work, ctx), ctx)

    bare, hooked = [], []
    for _ in range(5):
        bare.append(await per_call_us(work, n))
        hooked.append(await per_call_us(through_hooks, n))
    return statistics.median(bare), statistics.median(hooked)


async def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer calls and rounds (~15 s)")
    args = ap.parse_args(argv)
    n_absent, n_sdk, rounds = (5_000, 1_000, 3) if args.quick else (20_000, 4_000, 5)

    telemetry.configure()
    if telemetry.enabled():
        sys.exit("a global OpenTelemetry SDK is installed: 'absent' cannot be measured")
    modes = make_modes()
    pipelines = make_pipelines()
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for mode, enter, leave in modes:
            enter()
            try:
                assert telemetry.enabled() == (mode != "absent")
                for row, fn in pipelines:
                    n = n_absent if mode == "absent" else n_sdk
                    await per_call_us(fn, n // 10)  # warm up
                    results.setdefault((row, mode), []).append(await per_call_us(fn, n))
            finally:
                leave()

    names = [m for m, _, _ in modes]
    width = max(len(r) for r, _ in pipelines)
    print(f"\nPer-call time in µs (median of {rounds} rounds), Python {sys.version.split()[0]}")
    header = f"{'pipeline':<{width}} " + " ".join(f"{m:>18}" for m in names)
    print(header)
    print("-" * len(header))
    for row, _ in pipelines:
        cells = [statistics.median(results[(row, m)]) for m in names]
        print(f"{row:<{width}} " + " ".join(f"{c:>18.2f}" for c in cells))
    print("\nRatio to 'absent' (same pipeline):")
    print(f"{'pipeline':<{width}} " + " ".join(f"{m:>18}" for m in names[1:]))
    for row, _ in pipelines:
        base = statistics.median(results[(row, "absent")])
        cells = [statistics.median(results[(row, m)]) / base for m in names[1:]]
        print(f"{row:<{width}} " + " ".join(f"{c:>17.1f}x" for c in cells))
    print("\nAdded per call by the SDK (µs, same pipeline, minus 'absent'):")
    for row, _ in pipelines:
        base = statistics.median(results[(row, "absent")])
        cells = [statistics.median(results[(row, m)]) - base for m in names[1:]]
        print(f"{row:<{width}} " + " ".join(f"{c:>18.2f}" for c in cells))

    bare, hooked = await hooks_absent_us(n_absent * 2)
    print(
        f"\nHooks alone, telemetry absent: bare await {bare:.3f} µs; "
        f"instrument_call+instrument_attempt {hooked:.3f} µs "
        f"(+{hooked - bare:.3f} µs, {hooked / bare:.2f}x)"
    )
    raw = raw_span_us(n_sdk)
    print(
        f"Reference: one bare SDK span (start_span + end, SimpleSpanProcessor, dropping "
        f"exporter) costs {raw:.2f} µs here; a pipeline call makes two (call + attempt)."
    )
    check = enabled_check_ns(n_absent * 20)
    print(
        f"The cached 'is telemetry on?' check (telemetry.enabled(), what Pipeline pays per "
        f"call when absent): {check:.0f} ns"
    )


def raw_span_us(n: int) -> float:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(DropExporter()))
    tracer = tp.get_tracer("bench")
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            tracer.start_span("span", attributes={"a": "b", "n": 1}).end()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    tp.shutdown()
    return statistics.median(runs)


def enabled_check_ns(n: int) -> float:
    check = telemetry.enabled
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            check()
        t1 = time.perf_counter()
        for _ in range(n):
            pass
        t2 = time.perf_counter()
        best = min(best, ((t1 - t0) - (t2 - t1)) / n * 1e9)
    return best


if __name__ == "__main__":
    asyncio.run(main())
