"""Issue 15: a token quota charged by estimate only vs reserve -> settle, in the same run.

The strict fake AI server (``resilience.demo.ai``, loopback, in this process) enforces
``--token-limit`` tokens (input + output, as it bills them: ``_quota.py``) per rolling
``--window`` seconds and answers 429 beyond. ``--tasks`` client tasks call its OpenAI chat
endpoint in a loop, each call a 16-character prompt (4 input tokens) with ``max_tokens=200``;
the server bills ``ceil(200 * 0.5) = 100`` output tokens, so a call costs 104 tokens and the
clients' estimate (input + ``max_tokens``) is 204, about twice the actual usage. Contenders,
each with a fresh server and a fresh :class:`resilience.MemoryStore`, the same limiter
``SlidingWindowLimiter(token_limit, window, guard=0.05)``:

- ``estimate``: ``await limiter.acquire(cost=estimate)`` before each call (the estimate stays
  charged: what ``cost=`` does today);
- ``settle``: ``async with limiter.reserve(estimate) as r:``, the call, then
  ``await r.settle(usage.total_tokens)``.

Goodput is the tokens the server admitted in the whole windows of the run (from the first
call, on the server's clock) over what its quota allows in them; 429s are the server's.

    .venv/bin/python benchmarks/tokens.py            # ~26 s
    .venv/bin/python benchmarks/tokens.py --seconds 20 --tasks 32

Targets: ``settle`` >= 95 % goodput with <= 1 % of requests answered 429; ``estimate`` about
half. What ``settle`` loses: the estimates of the calls queued or in flight count until they
settle (a reservation must hold its estimate), about ``tasks x (estimate - actual)`` of the
quota at any time: 16 x 100 of 40 000 here (4 %); with ``--token-limit 10000`` (16 %) it
measured 87 %.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resilience import MemoryStore, SlidingWindowLimiter  # noqa: E402
from resilience.demo.ai import start_ai_upstream  # noqa: E402

PROMPT = "x" * 16  # 4 input tokens
MAX_TOKENS = 200  # billed 100 output tokens (output_ratio 0.5)
ESTIMATE = 4 + MAX_TOKENS


@dataclass
class Result:
    contender: str
    requests: int
    ok: int
    rejected: int
    tokens: int
    goodput: float
    max_tokens_in_window: int


async def run(
    contender: str, token_limit: int, window: float, seconds: float, tasks: int
) -> Result:
    server = await start_ai_upstream(
        limit=10**6, window=window, token_limit=token_limit, output_ratio=0.5, seed=1
    )
    lim = SlidingWindowLimiter(token_limit, window, store=MemoryStore(), guard=0.05, name="tpm")
    url = server.openai_base_url + "/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 200}
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http, server:

        async def call() -> int:
            async with http.post(url, json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    return -1
                return int(data["usage"]["total_tokens"])

        async def client() -> None:
            while True:
                left = stop - time.monotonic()
                if left <= 0:
                    return
                try:
                    if contender == "estimate":
                        await lim.acquire(cost=ESTIMATE, timeout=left)
                        used = await call()
                    else:
                        async with lim.reserve(ESTIMATE, timeout=left) as r:
                            used = await call()
                            if used >= 0:
                                await r.settle(used)
                            else:
                                await r.settle(0)  # a 429 is not billed
                except Exception:  # RateLimited: the next slot lies beyond the run
                    return
                if used < 0:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*[client() for _ in range(tasks)])
        stats = server.stats()
        calls = [c for c in server.upstream.calls if c.kind in ("ok", "stream_error")]
    # Whole windows from the first call on (the server's clock): k disjoint windows hold at
    # most k x token_limit tokens, so goodput is the share of that the clients got billed.
    t0 = calls[0].t
    k = max(int((calls[-1].t - t0) // window), 1)
    measured = sum(c.input_tokens + c.output_tokens for c in calls if c.t < t0 + k * window)
    allowed = token_limit * k
    return Result(
        contender,
        stats.requests,
        stats.ok,
        stats.quota_429,
        stats.total_tokens,
        measured / allowed,
        stats.max_tokens_in_window,
    )


async def main(args: argparse.Namespace) -> None:
    print(
        f"token quota {args.token_limit} per {args.window} s, {args.tasks} tasks, "
        f"{args.seconds} s per contender; a call bills 104 tokens, its estimate is {ESTIMATE}"
    )
    print(f"{'contender':<10} {'requests':>8} {'ok':>6} {'429':>5} {'429 %':>6} {'goodput':>8}")
    for contender in ("estimate", "settle"):
        r = await run(contender, args.token_limit, args.window, args.seconds, args.tasks)
        share = 100 * r.rejected / max(r.requests, 1)
        print(
            f"{r.contender:<10} {r.requests:>8} {r.ok:>6} {r.rejected:>5} {share:>5.1f}% "
            f"{100 * r.goodput:>7.1f}%   (max tokens in a window: {r.max_tokens_in_window})"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--token-limit", type=int, default=40_000)
    p.add_argument("--window", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=13.0)
    p.add_argument("--tasks", type=int, default=16)
    asyncio.run(main(p.parse_args()))
