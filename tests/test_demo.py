"""The demo end to end (small parameters), and the upstream's strict window."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from resilience.demo.fleet import DemoConfig, run_demo
from resilience.demo.upstream import ANALYZE_PATH, Upstream, start_upstream
from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent


# the upstream ---------------------------------------------------------------------------------


def test_upstream_window_is_strict_on_its_own_clock() -> None:
    now = [0.0]
    up = Upstream(limit=3, window=10.0, clock=lambda: now[0])
    assert [up.decide()[0] for _ in range(4)] == [200, 200, 200, 429]
    status, wait = up.decide()
    assert status == 429
    assert wait == pytest.approx(10.0)
    now[0] = 9.999
    status, wait = up.decide()
    assert status == 429
    assert wait == pytest.approx(0.001)
    now[0] = 10.0  # the first admissions leave the window (t - window, t]
    assert [up.decide()[0] for _ in range(4)] == [200, 200, 200, 429]
    s = up.stats()
    assert (s.ok, s.rejected_429, s.max_in_window) == (6, 4, 3)


async def test_upstream_serves_429_with_retry_after_and_ratelimit() -> None:
    url, stop = await start_upstream(limit=2, window=30.0)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.post(url + ANALYZE_PATH, json={}) as resp:
                statuses.append(resp.status)
                headers = resp.headers
        assert statuses == [200, 200, 429]
        assert headers["Retry-After"] == "30"  # integer delay-seconds, rounded up
        assert headers["RateLimit"] == '"default";r=0;t=30'
        assert headers["RateLimit-Policy"] == '"default";q=2;w=30'
        async with session.get(url + "/stats") as resp:
            assert (await resp.json())["rejected_429"] == 1
    stats = await stop()
    assert (stats.requests, stats.ok, stats.rejected_429) == (3, 2, 1)


async def test_upstream_fail_rate() -> None:
    up = Upstream(limit=1000, window=1.0, fail_rate=0.3, seed=7)
    statuses = [up.decide()[0] for _ in range(1000)]
    assert 200 < statuses.count(503) < 400
    assert up.stats().ok == statuses.count(200)  # a 503 consumes no quota


# the demo -------------------------------------------------------------------------------------

# Small runs: 50 per window of 1 s (time scale 60), 120 jobs, 3 workers x 6 tasks.
SMALL = {"limit": 50, "time_scale": 60.0, "workers": 3, "tasks": 6, "jobs": 120}


def check_resilience(r: dict[str, object], jobs: int) -> None:
    assert r["completed"] == jobs
    assert r["lost"] == 0  # nothing lost
    assert r["share_429"] <= 0.01  # type: ignore[operator]
    assert r["max_in_window"] <= SMALL["limit"]  # type: ignore[operator]


async def test_demo_in_process_both_modes() -> None:
    cfg = DemoConfig(**SMALL, fail_rate=0.03)  # type: ignore[arg-type]
    # This runs inside the test session's interpreter, whose heap the earlier tests have grown:
    # a full garbage collection there can stall the event loop for longer than the limiter's
    # latency guard (upstream and workers share this loop). Freeze the old heap, as a fresh
    # demo process would not have it; the CLI tests below run the demo in its own process.
    gc.collect()
    gc.freeze()
    try:
        naive, res = await run_demo(cfg)
    finally:
        gc.unfreeze()
    for r in (naive, res):
        # Every job ends completed or reported failed with its reason.
        assert r.completed + r.lost == cfg.jobs
        assert sum(r.lost_reasons.values()) == r.lost
    check_resilience(res.to_dict(), cfg.jobs)
    # The story: the naive fleet (a per-process limiter each) overshoots and draws 429s.
    assert naive.upstream_429 > res.upstream_429
    assert naive.requests > naive.completed


def test_demo_cli_json_in_process() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "resilience",
            "demo",
            "--json",
            "--quiet",
            "--mode",
            "resilience",
            "--time-scale",
            "60",
            "--jobs",
            "80",
            "--workers",
            "2",
            "--tasks",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(out.stdout)
    assert list(data["results"]) == ["resilience"]
    assert data["config"]["window"] == 1.0
    check_resilience(data["results"]["resilience"], 80)


def test_demo_cli_table_and_progress_without_tty() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "resilience",
            "demo",
            "--mode",
            "naive",
            "--time-scale",
            "60",
            "--jobs",
            "60",
            "--workers",
            "2",
            "--tasks",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "jobs completed" in out.stdout
    assert "goodput" in out.stdout
    assert "naive: 60/60 jobs" in out.stderr  # progress degrades to lines when not a TTY
    assert "\r" not in out.stderr


def test_demo_cli_rejects_bad_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resilience", "demo", "--workers", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "workers" in out.stderr


@pytest.mark.redis
@pytest.mark.slow
def test_demo_cli_json_with_redis_processes(redis_server: RedisServer) -> None:
    # Workers are spawned processes sharing the fixture's redis-server (queue, limiter,
    # breaker, retry budget): the distributed claim of the demo.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "resilience",
            "demo",
            "--json",
            "--quiet",
            "--redis",
            redis_server.url,
            "--time-scale",
            "60",
            "--jobs",
            "120",
            "--workers",
            "3",
            "--tasks",
            "6",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["config"]["redis"] is True
    check_resilience(data["results"]["resilience"], 120)
    naive = data["results"]["naive"]
    assert naive["completed"] + naive["lost"] == 120


# the demo through the real AI SDKs (--api) ------------------------------------------------------


def _demo_json(*args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "resilience", "demo", "--json", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    data: dict[str, Any] = json.loads(out.stdout)
    return data


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_demo_cli_through_the_real_sdk(api: str) -> None:
    pytest.importorskip(api)
    data = _demo_json(
        "--api", api, "--time-scale", "60", "--jobs", "80", "--workers", "2", "--tasks", "4"
    )
    assert data["config"]["api"] == api
    # resilience: SDK max_retries=0 under the pipeline, every classification the default.
    check_resilience(data["results"]["resilience"], 80)
    # naive: the SDK's defaults (its own retries, no limiter) overshoot and draw 429s.
    naive = data["results"]["naive"]
    assert naive["completed"] + naive["lost"] == 80
    assert naive["upstream_429"] > 0
    assert naive["requests"] > 80  # the SDK's own retries, counted by the upstream


def test_demo_cli_table_names_the_sdk() -> None:
    pytest.importorskip("anthropic")
    out = subprocess.run(
        [sys.executable, "-m", "resilience", "demo", "--api", "anthropic", "--quiet",
         "--mode", "resilience", "--time-scale", "60", "--jobs", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "client: the real anthropic SDK" in out.stdout
    assert "jobs completed" in out.stdout


def test_demo_cli_rejects_an_unknown_api() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resilience", "demo", "--api", "gemini"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--api" in out.stderr


def test_demo_config_rejects_an_unknown_api() -> None:
    with pytest.raises(ValueError, match="api"):
        DemoConfig(api="gemini")  # type: ignore[arg-type]


@pytest.mark.redis
@pytest.mark.slow
def test_demo_cli_through_the_sdk_with_redis_processes(redis_server: RedisServer) -> None:
    pytest.importorskip("openai")
    data = _demo_json(
        "--api", "openai", "--redis", redis_server.url, "--time-scale", "60", "--jobs", "120",
        "--workers", "3", "--tasks", "6", timeout=170,
    )  # fmt: skip
    assert data["config"]["redis"] is True
    check_resilience(data["results"]["resilience"], 120)
    naive = data["results"]["naive"]
    assert naive["completed"] + naive["lost"] == 120
