"""Happy-path overhead per call: our Retry and pipeline against tenacity, stamina, aiolimiter and
the tenacity + aiolimiter + pybreaker stack, side by side in one run.

No call fails and nothing waits: this measures what a policy costs when all is well, which is
what every call pays. Each contender wraps the same trivial coroutine; the table gives the time
per call, the overhead over a bare ``await``, and how many times cheaper than the stack each is.

Fairness notes:

- every contender runs in the same process, interleaved round by round; the figure is the
  median of the rounds' per-call times;
- tenacity: ``@retry(stop=stop_after_attempt(3), wait=wait_random_exponential(...),
  retry=retry_if_exception_type(ConnectionError))`` on the ``async def`` (AsyncRetrying);
- stamina: ``@stamina.retry(on=ConnectionError, attempts=3)``;
- aiolimiter: ``async with AsyncLimiter(10**9, 1)`` (never waits);
- pybreaker's asyncio path (``call_async``) needs Tornado, so the stack uses its documented
  ``with breaker.calling():`` context manager around the awaited body, which records the
  body's exceptions exactly as ``call`` would (its lock is re-entrant, so tasks on one loop do
  not deadlock);
- ours: ``Retry(3)`` (full-jitter exponential, no deadline, no budget), the same with a
  ``RetryBudget`` and with ``deadline=30``,
  ``Pipeline(Retry(3), SlidingWindowLimiter(10**6, 0.1, store=MemoryStore(), guard=0))``
  (at several hundred thousand calls/s the exact sliding log then holds tens of thousands of
  entries, so the same pipeline with a 1 ms window, a short log, and the limiter alone are
  shown too), and the README's three policies, ``Pipeline(Retry(3), CircuitBreaker(),
  SlidingWindowLimiter(...))`` on one memory store, with the breaker alone.

The targets of issue 13 are printed under the table: the three policies at most 1/12 of the
stack's overhead (">= 12x cheaper").

Run: ``.venv/bin/python benchmarks/overhead.py [--calls N] [--rounds R]`` (about 5-20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiolimiter
import pybreaker
import stamina
import tenacity

from resilience import (
    CircuitBreaker,
    MemoryStore,
    Pipeline,
    Retry,
    RetryBudget,
    SlidingWindowLimiter,
)

Factory = Callable[[], Callable[[], Awaitable[Any]]]


async def work() -> int:
    return 1


def bare() -> Callable[[], Awaitable[Any]]:
    return work


def ours_retry() -> Callable[[], Awaitable[Any]]:
    return Retry(3)(work)


def ours_retry_budget() -> Callable[[], Awaitable[Any]]:
    return Retry(3, budget=RetryBudget(store=MemoryStore()))(work)


def ours_retry_limiter() -> Callable[[], Awaitable[Any]]:
    limiter = SlidingWindowLimiter(10**6, 0.1, store=MemoryStore(), guard=0)
    return Pipeline(Retry(3), limiter)(work)


def ours_retry_limiter_small_log() -> Callable[[], Awaitable[Any]]:
    # 1 ms window: the log holds a few dozen entries, isolating the per-decision cost from
    # the cost that grows with the log's length.
    limiter = SlidingWindowLimiter(10**6, 0.001, store=MemoryStore(), guard=0)
    return Pipeline(Retry(3), limiter)(work)


def ours_limiter_alone() -> Callable[[], Awaitable[Any]]:
    return SlidingWindowLimiter(10**6, 0.1, store=MemoryStore(), guard=0)(work)


def ours_full() -> Callable[[], Awaitable[Any]]:
    # The three policies of the README's pipeline, on the memory store.
    store = MemoryStore()
    breaker = CircuitBreaker(store=store)
    limiter = SlidingWindowLimiter(10**6, 0.1, store=store, guard=0)
    return Pipeline(Retry(3), breaker, limiter)(work)


def ours_breaker_alone() -> Callable[[], Awaitable[Any]]:
    return CircuitBreaker(store=MemoryStore())(work)


def ours_retry_deadline() -> Callable[[], Awaitable[Any]]:
    return Retry(3, deadline=30.0)(work)


def tenacity_retry() -> Callable[[], Awaitable[Any]]:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=1, max=60),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        reraise=True,
    )(work)


def stamina_retry() -> Callable[[], Awaitable[Any]]:
    return stamina.retry(on=ConnectionError, attempts=3)(work)


def aiolimiter_only() -> Callable[[], Awaitable[Any]]:
    limiter = aiolimiter.AsyncLimiter(10**9, 1)

    async def call() -> int:
        async with limiter:
            return await work()

    return call


def stack() -> Callable[[], Awaitable[Any]]:
    limiter = aiolimiter.AsyncLimiter(10**9, 1)
    breaker = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=30)

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=1, max=60),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        reraise=True,
    )
    async def call() -> int:
        async with limiter:
            with breaker.calling():
                return await work()

    return call


CONTENDERS: list[tuple[str, Factory]] = [
    ("bare await", bare),
    ("resilience Retry", ours_retry),
    ("resilience Retry + budget", ours_retry_budget),
    ("resilience Retry(deadline=30)", ours_retry_deadline),
    ("resilience Pipeline(Retry, limiter)", ours_retry_limiter),
    ("  same, 1 ms window (short log)", ours_retry_limiter_small_log),
    ("  SlidingWindowLimiter alone", ours_limiter_alone),
    ("resilience Pipeline(Retry, breaker, limiter)", ours_full),
    ("  CircuitBreaker alone", ours_breaker_alone),
    ("tenacity @retry", tenacity_retry),
    ("stamina @retry", stamina_retry),
    ("aiolimiter AsyncLimiter", aiolimiter_only),
    ("tenacity + aiolimiter + pybreaker", stack),
]


async def per_call(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - t0) / calls


async def main(calls: int, rounds: int) -> dict[str, float]:
    fns = [(name, factory()) for name, factory in CONTENDERS]
    for _, fn in fns:  # warm-up
        await per_call(fn, min(calls, 2000))
    samples: dict[str, list[float]] = {name: [] for name, _ in fns}
    for _ in range(rounds):
        for name, fn in fns:
            # heavy contenders get fewer calls per round to bound the run time
            n = calls if "tenacity" not in name and "stamina" not in name else calls // 10
            samples[name].append(await per_call(fn, n))
    return {name: statistics.median(s) for name, s in samples.items()}


def report(results: dict[str, float]) -> None:
    base = results["bare await"]
    stack_cost = results["tenacity + aiolimiter + pybreaker"] - base
    print(f"{'contender':46} {'per call':>10} {'overhead':>10} {'x cheaper than stack':>22}")
    for name, t in results.items():
        over = t - base
        ratio = "" if name == "bare await" or over <= 0 else f"{stack_cost / over:.1f}"
        print(f"{name:46} {t * 1e6:8.2f}us {over * 1e6:8.2f}us {ratio:>22}")
    ours = results["resilience Retry"] - base
    pipe = results["resilience Pipeline(Retry, limiter)"] - base
    print()
    print(f"target: Retry overhead <= 2 us -> {ours * 1e6:.2f} us")
    print(
        f"target: Retry + memory limiter >= 10x cheaper than the stack -> {stack_cost / pipe:.1f}x"
    )
    small = results["  same, 1 ms window (short log)"] - base
    print(f"        (with a short log: {stack_cost / small:.1f}x)")
    full = results["resilience Pipeline(Retry, breaker, limiter)"] - base
    print(
        "target: Retry + breaker + memory limiter >= 12x cheaper than the stack -> "
        f"{stack_cost / full:.1f}x"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20_000, help="calls per round (light contenders)")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    report(asyncio.run(main(a.calls, a.rounds)))
