"""Issue 14's acceptance run: the real openai and anthropic SDKs in a fleet sharing Redis,
against a strict fake AI server; SDK defaults, SDK + tenacity and resilience, in one run.

Setup (the issue's): 3 worker processes x 10 tasks sharing a throwaway redis-server (the job
queue; for resilience, the policies' state), 150 jobs, each job one chat call through the real
SDK; the fake server (``resilience.demo.ai``, run in this process, loopback) admits 30 requests
per rolling 2 s on its own clock and answers real-looking 429s beyond (the providers' bodies,
``retry-after-ms``/``retry-after``, rate-limit headers). Contenders, each with a fresh server
and fresh worker processes:

- ``sdk``: SDK defaults (``max_retries=2``: the SDK's own retries), nothing else;
- ``tenacity``: SDK ``max_retries=0`` under ``@retry(stop=stop_after_attempt(6),
  wait=wait_random_exponential(multiplier=1, max=60))``;
- ``resilience``: SDK ``max_retries=0`` under ``Pipeline(Retry(attempts=6, deadline=60),
  CircuitBreaker(store=, name=), SlidingWindowLimiter(30, 2.0, store=, name=))`` as a
  decorator, every other option the default (no ``retry_on``, ``failure_on``, no glue);
- ``transport``: the same three policies in ``resilience.httpx2.ResilientTransport``.

Scenarios: ``warm`` (each process makes one call before the start, then the quota's window
passes), ``cold`` (the clients and policies are built when the run starts: their first
requests are the clients' first), ``tenant`` (warm; another client of the same API key takes
the server's whole quota every ``--exhaust-every`` s, the first time just before the start).
A job is lost when its call raises (no requeue). Requests, 429s and goodput are the server's
counts for the measured part.

Then the single-request rules, per contender and SDK: the requests one ``insufficient_quota``
(Anthropic: its spend-limit 429) and one 400 cost, and with 2 processes sharing Redis, the
delay a 429 with ``retry-after-ms: 1500`` puts before the call's next request and the other
process's requests that reached the server meanwhile.

    .venv/bin/python benchmarks/ai_sdk.py                      # everything, ~10 min
    .venv/bin/python benchmarks/ai_sdk.py --scenarios warm --contenders resilience --no-rules

Targets (resilience, both SDKs): 0 jobs lost and <= 2 % of requests answered 429 in ``warm``
and ``cold``, 0 jobs lost in ``tenant``; an insufficient_quota or a 400 after exactly one
request; the 1.5 s hint delays the next request >= 1.4 s and keeps the other process's
requests off the server meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resilience.demo._sdk import APIS, CONTENDERS, Api, Contender  # noqa: E402
from resilience.demo._sdk_fleet import (  # noqa: E402
    SCENARIOS,
    FaultProbe,
    FleetResult,
    PauseResult,
    Scenario,
    probe_fault,
    run_fleet,
    run_pause,
)
from resilience.demo.ai import Fault  # noqa: E402
from tests.redis_servers import RedisServer  # noqa: E402


def fleet_table(results: Sequence[FleetResult]) -> str:
    lines = [
        "| scenario | SDK | contender | jobs done | lost | requests | 429s | 429 share | "
        "SDK retries | other client took | goodput | max/window | wall |",
        "|" + "---|" * 13,
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.api} | {r.contender} | {r.done} | {r.lost} | {r.requests} | "
            f"{r.answered_429} | {r.share_429:.1%} | {r.sdk_retries} | {r.other_tenant} | "
            f"{r.goodput:.0%} | {r.max_in_window} | {r.wall:.1f} s |"
        )
    return "\n".join(lines)


def rules_table(probes: Sequence[FaultProbe], pauses: Sequence[PauseResult]) -> str:
    lines = [
        "| SDK | contender | requests for one insufficient_quota | requests for one 400 | "
        "next request after a 1.5 s hint | other process's requests during the hint |",
        "|" + "---|" * 6,
    ]
    for p in pauses:
        q = next(
            x for x in probes if (x.api, x.contender, x.fault) == (p.api, p.contender, "quota")
        )
        b = next(x for x in probes if (x.api, x.contender, x.fault) == (p.api, p.contender, "400"))
        delay = "none" if p.delay is None else f"{p.delay:.2f} s"
        lines.append(
            f"| {p.api} | {p.contender} | {q.requests} | {b.requests} | {delay} | "
            f"{p.other_during} (+{p.other_in_flight} in flight) |"
        )
    return "\n".join(lines)


def verdict(results: Sequence[FleetResult], probes: Sequence[FaultProbe],
            pauses: Sequence[PauseResult]) -> list[str]:  # fmt: skip
    """What missed its target (resilience contenders only)."""
    misses = []
    ours = ("resilience", "transport")
    for r in results:
        if r.contender not in ours:
            continue
        if r.lost:
            misses.append(f"{r.scenario}/{r.api}/{r.contender}: {r.lost} jobs lost")
        if r.scenario != "tenant" and r.share_429 > 0.02:
            misses.append(f"{r.scenario}/{r.api}/{r.contender}: {r.share_429:.1%} answered 429")
    for p in probes:
        if p.contender in ours and p.requests != 1:
            misses.append(f"{p.api}/{p.contender}: {p.fault} cost {p.requests} requests")
    for q in pauses:
        if q.contender not in ours:
            continue
        if q.delay is None or q.delay < 1.4:
            misses.append(f"{q.api}/{q.contender}: next request after the hint: {q.delay}")
        if q.other_during:
            misses.append(f"{q.api}/{q.contender}: {q.other_during} other requests in the pause")
    return misses


async def rules(apis: Sequence[Api], contenders: Sequence[Contender], redis_url: str
                ) -> tuple[list[FaultProbe], list[PauseResult]]:  # fmt: skip
    probes = await asyncio.gather(
        *(
            probe_fault(c, api, fault, label)
            for api in apis
            for c in contenders
            for fault, label in (
                (Fault.insufficient_quota(), "quota"),
                (Fault.bad_request(), "400"),
            )
        )
    )
    pauses = []
    for api in apis:
        for c in contenders:
            pauses.append(await run_pause(c, api, redis_url=redis_url))
    return list(probes), pauses


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--apis", default=",".join(APIS))
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--jobs", type=int, default=150)
    p.add_argument("--processes", type=int, default=3)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--exhaust-every", type=float, default=5.0)
    p.add_argument("--no-rules", action="store_true", help="skip the single-request rules")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = p.parse_args(argv)
    scenarios = [cast(Scenario, s) for s in args.scenarios.split(",")]
    apis = [cast(Api, a) for a in args.apis.split(",")]
    contenders = [cast(Contender, c) for c in args.contenders.split(",")]
    for name, got, known in (
        ("scenario", scenarios, SCENARIOS),
        ("api", apis, APIS),
        ("contender", contenders, CONTENDERS),
    ):
        bad = set(got) - set(known)
        if bad:
            p.error(f"unknown {name}: {sorted(bad)} (known: {', '.join(known)})")
    print(
        f"fleet: {args.processes} processes x {args.tasks} tasks sharing redis-server, "
        f"{args.jobs} jobs; strict server {args.limit} requests per {args.window:g} s; "
        f"SDK versions: {sdk_versions()}",
        flush=True,
    )
    started = time.monotonic()
    results: list[FleetResult] = []
    probes: list[FaultProbe] = []
    pauses: list[PauseResult] = []
    with RedisServer() as redis:
        for scenario in scenarios:
            for api in apis:
                for contender in contenders:
                    res = asyncio.run(
                        run_fleet(
                            scenario,
                            api,
                            contender,
                            redis_url=redis.url,
                            jobs=args.jobs,
                            processes=args.processes,
                            tasks=args.tasks,
                            limit=args.limit,
                            window=args.window,
                            exhaust_every=args.exhaust_every,
                        )
                    )
                    results.append(res)
                    print(fleet_table([res]).splitlines()[-1], flush=True)
                    if res.lost_reasons:
                        print(f"    lost: {res.lost_reasons}", flush=True)
                    if res.the_429s and contender in ("resilience", "transport"):
                        print(f"    429s: {'; '.join(res.the_429s)}", flush=True)
                    if res.lag:
                        print(f"    lag: {'; '.join(res.lag)}", flush=True)
        if not args.no_rules:
            probes, pauses = asyncio.run(rules(apis, contenders, redis.url))
    print()
    print(fleet_table(results))
    if pauses:
        print()
        print(rules_table(probes, pauses))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json is not None:
        data = {
            "fleet": [asdict(r) for r in results],
            "faults": [asdict(x) for x in probes],
            "pauses": [asdict(x) for x in pauses],
        }
        args.json.write_text(json.dumps(data, indent=2))
    misses = verdict(results, probes, pauses)
    for m in misses:
        print("target NOT met:", m)
    if not misses:
        print("targets met (resilience, every run above)")
    return 1 if misses else 0


def sdk_versions() -> str:
    import importlib.metadata as md

    out = []
    for name in ("openai", "anthropic", "httpx2", "tenacity"):
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            out.append(f"{name} missing")
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
