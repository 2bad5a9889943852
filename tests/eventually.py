"""Waiting for background work in tests, bounded: poll a check instead of sleeping a fixed time
(a loaded CI machine can take longer than any fixed sleep, and the check then races it)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 3.0, what: str = "condition"
) -> None:
    """Return once ``check()`` (a plain or async callable) is true; fail the test with
    ``what`` if it is still false after ``timeout`` seconds. Polls every 10 ms."""
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if inspect.isawaitable(ok):
            ok = await ok
        if ok:
            return
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout}s"
        await asyncio.sleep(0.01)
