"""The fake AI server as a process: ``python -m resilience.demo.ai``, :class:`AIUpstreamProcess`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from resilience.demo.ai.faults import Fault
from resilience.demo.ai.server import (
    CONTROL_PATH,
    AIStats,
    AIUpstream,
    check_host,
    start_ai_upstream,
)

__all__ = ["AIUpstreamProcess", "main"]


_OPTIONS: dict[str, type] = {
    "limit": int,
    "window": float,
    "fail_rate": float,
    "seed": int,
    "token_limit": int,
    "input_token_limit": int,
    "output_token_limit": int,
    "advertised_limit": int,
    "advertised_token_limit": int,
    "exhaust_every": float,
    "slow_rate": float,
    "slow_delay": float,
    "output_ratio": float,
    "default_max_tokens": int,
    "api_key": str,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resilience.demo.ai",
        description="A strict local fake of the OpenAI and Anthropic APIs (loopback only).",
    )
    p.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    for name, kind in _OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, dest=name)
    return p


async def _serve_forever(args: argparse.Namespace) -> AIStats:
    options = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None}
    server = await start_ai_upstream(host=args.host, port=args.port, **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"url": server.url}), flush=True)
    try:
        await stop.wait()
    finally:
        stats = await server.stop()
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resilience.demo.ai``: serve until SIGTERM/SIGINT, then print the
    final :class:`AIStats` as one JSON line."""
    args = _parser().parse_args(argv)
    try:
        check_host(args.host)
        stats = asyncio.run(_serve_forever(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats.to_dict()), flush=True)
    return 0


class AIUpstreamProcess:
    """The fake server in a child process (a context manager), for multi-process tests.

    ``with AIUpstreamProcess(limit=30, window=2.0) as up:`` starts
    ``python -m resilience.demo.ai`` with these options and waits for its URL;
    :meth:`script` and :meth:`stats` talk to it over loopback HTTP; leaving the block
    terminates it (:attr:`final` then holds its last figures).
    """

    def __init__(self, *, startup_timeout: float = 30.0, **options: Any) -> None:
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ValueError(f"unknown options: {sorted(unknown)}")
        AIUpstream(**options)  # validate here, with a clear error
        self._args = [sys.executable, "-m", "resilience.demo.ai"]
        for k, v in options.items():
            if v is not None:
                self._args += ["--" + k.replace("_", "-"), str(v)]
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.final: AIStats | None = None

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for the OpenAI SDK."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for the Anthropic SDK."""
        return self.url

    def start(self) -> AIUpstreamProcess:
        """Start the process and wait until it serves."""
        self._proc = proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + self._timeout
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        if not line:
            self.stop()
            raise RuntimeError("the fake AI server did not start")
        self.url = json.loads(line)["url"]
        return self

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.url + CONTROL_PATH + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def script(self, *faults: Fault) -> None:
        """Queue scripted answers in the server process."""
        self._call("POST", "/script", {"faults": [f.to_dict() for f in faults]})

    def stats(self) -> AIStats:
        """The server's figures so far."""
        return AIStats.from_dict(self._call("GET", "/stats"))

    def stop(self) -> AIStats | None:
        """Terminate the process (idempotent); returns its final figures when it printed them."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.final
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in reversed(out.strip().splitlines()):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.final = AIStats.from_dict(json.loads(line))
                break
        return self.final

    def __enter__(self) -> AIUpstreamProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
