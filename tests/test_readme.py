"""The README stays true: its code runs, and its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.redis_servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


async def test_readme_code_runs(redis_server: RedisServer) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        assert "redis://localhost:6379/0" in block
        # the test's own throwaway server, never the machine's Redis
        block = block.replace("redis://localhost:6379/0", redis_server.url)
        namespace: dict[str, object] = {}
        exec(compile(block, "README.md", "exec"), namespace)
        analyze = namespace["analyze"]
        assert await analyze("text") is None  # type: ignore[operator]
        store = namespace["store"]
        await store.aclose()  # type: ignore[attr-defined]


def test_readme_test_command_is_what_ci_runs() -> None:
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest"
    assert command in README
    assert command in (ROOT / ".ci" / "run").read_text()
    assert "python -m resilience demo" in README
