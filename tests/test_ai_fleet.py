"""Issue 14's acceptance, bounded: the real SDKs under the library's defaults, in a fleet.

``SDK max_retries=0`` under ``Pipeline(Retry(attempts=6, deadline=60), CircuitBreaker(),
SlidingWindowLimiter(30, 2.0))`` as a decorator around the SDK call, no ``retry_on``, no
``failure_on``, no glue (``resilience.demo._sdk.make_call``), against the strict fake AI server
(30 requests per rolling 2 s on its own clock, real-looking 429s beyond):

- 2 worker processes x 10 tasks sharing a real redis-server drain 90 jobs: none lost, at most
  2 % of the requests answered 429 (the full 3 x 10 x 150 run for both SDKs, cold and warm, is
  ``benchmarks/ai_sdk.py``);
- an ``insufficient_quota`` (Anthropic: a spend-limit 429) or a 400 fails after exactly one
  request, as the SDK's own error;
- a 429 with ``retry-after-ms: 1500`` delays the call's next request by at least 1.4 s, and
  the other process, calling all along, sends nothing meanwhile;
- the two examples run as a user would run them.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")
pytest.importorskip("httpx2")

from resilience import testing
from resilience.demo._sdk import Api, make_call
from resilience.demo._sdk_fleet import (
    RecordingUpstream,
    probe_fault,
    run_fleet,
    run_pause,
    start_recording_upstream,
)
from resilience.demo.ai import Fault
from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_processes_share_the_quota_and_lose_nothing(redis_server: RedisServer) -> None:
    res = await run_fleet(
        "warm", "openai", "resilience", redis_url=redis_server.url, jobs=90, processes=2
    )
    assert (res.done, res.lost) == (90, 0), res.lost_reasons
    assert res.share_429 <= 0.02, res.the_429s
    assert res.max_in_window <= 30
    assert res.sdk_retries == 0  # max_retries=0: the SDK never retried by itself


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fault", "label", "error"),
    [
        (Fault.insufficient_quota, "quota", {"openai": "RateLimitError",
                                             "anthropic": "EnforcedSpendLimitReachedError"}),
        (Fault.bad_request, "400", {"openai": "BadRequestError", "anthropic": "BadRequestError"}),
    ],
)  # fmt: skip
async def test_a_final_error_costs_one_request(
    api: Api, fault: Callable[[], Fault], label: str, error: dict[str, str]
) -> None:
    probe = await probe_fault("resilience", api, fault(), label)
    assert probe.requests == 1
    assert error[api] in probe.error  # the SDK's own class reaches the caller


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_transient_error_is_retried_by_default(api: Api) -> None:
    # The counterpart of the above: a 529 and a 503 are retried, with no retry_on given.
    async with await start_recording_upstream(limit=100, window=60.0) as server:
        up = server.upstream
        assert isinstance(up, RecordingUpstream)
        up.script_job(5, Fault.overloaded(), Fault.server_error(503))
        built = make_call("resilience", api, server.url, name="transient")
        try:
            with testing.testing_mode(attempts=6):  # no backoff sleeps
                await built.call(5)
        finally:
            await built.aclose()
        assert [a.status for a in up.requests_for(5)] == [529, 503, 200]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_hinted_429_pauses_the_fleet(redis_server: RedisServer, api: Api) -> None:
    res = await run_pause("resilience", api, redis_url=redis_server.url)
    assert res.outcome == "done"
    assert res.delay is not None
    assert res.delay >= 1.4
    # The other process called every 0.1 s all along, and nothing of it reached the server
    # between 50 ms after the 429 (requests already sent then) and 1.4 s after it.
    assert res.other_during == 0
    assert res.other_total >= 15


@pytest.mark.parametrize("example", ["openai_fleet.py", "anthropic_fleet.py"])
def test_example_runs(example: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--jobs", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "40/40 jobs done" in out.stdout
    # The example starts cold clients (the 429 figure under load is the open cold-start item
    # of issue 14): what it must show is that no job is lost and the 429s are a few at most.
    m = re.search(r"the server saw (\d+) requests, (\d+) answered 429", out.stdout)
    assert m is not None, out.stdout
    assert int(m[2]) <= 0.15 * int(m[1]), out.stdout


@pytest.mark.redis
def test_example_with_redis_and_an_external_server() -> None:
    with RedisServer() as redis:
        from resilience.demo.ai import AIUpstreamProcess

        with AIUpstreamProcess(limit=30, window=2.0) as server:
            out = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "examples" / "openai_fleet.py"),
                    "--jobs",
                    "40",
                    "--server",
                    server.url,
                    "--redis",
                    redis.url,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            stats = server.stats()
    assert "40/40 jobs done" in out.stdout
    assert stats.rate_limited <= 0.15 * stats.requests  # cold clients: see test_example_runs


@pytest.mark.redis
@pytest.mark.parametrize(("api", "block", "rpm"), [("openai", 0, 500), ("anthropic", 1, 50)])
async def test_the_recipes_of_docs_ai_run(
    api: str, block: int, rpm: int, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The recipes as printed in docs/ai.md, the SDK pointed at a fake server with the recipe's
    # quota through the SDK's environment variables, the store at the test's own redis-server.
    text = (ROOT / "docs" / "ai.md").read_text()
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]
    for code in blocks:  # every snippet is at least valid Python (awaits as in a notebook)
        compile(code, "docs/ai.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    code = blocks[block].replace("redis://localhost:6379/0", redis_server.url)
    assert f"import {api}" in code
    assert f"SlidingWindowLimiter({rpm}, 60," in code
    async with await start_recording_upstream(limit=rpm, window=60.0) as server:
        prefix = api.upper()
        monkeypatch.setenv(f"{prefix}_BASE_URL", server.url + ("/v1" if api == "openai" else ""))
        monkeypatch.setenv(f"{prefix}_API_KEY", "test")
        namespace: dict[str, Any] = {}
        exec(compile(code, "docs/ai.md", "exec"), namespace)
        try:
            replies = await asyncio.gather(*(namespace["summarize"](f"job {i}") for i in range(40)))
        finally:
            await namespace["client"].close()
            await namespace["store"].aclose()
        assert all(isinstance(r, str) and r for r in replies)
        stats = server.stats()
        assert (stats.requests, stats.rate_limited) == (40, 0)
