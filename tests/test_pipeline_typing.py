"""Static types survive decoration (checked by mypy in CI: `.venv/bin/mypy` covers tests/),
plus the runtime side of the same promise."""

from __future__ import annotations

import inspect

from typing_extensions import assert_type

from resilience import Pipeline, Retry, SlidingWindowLimiter


@Retry(3)
async def typed(a: int, b: str = "x", *, c: float = 1.0) -> list[str]:
    return [b] * a


@Pipeline(Retry(2), SlidingWindowLimiter(100, 1.0, name="typing"))
async def piped(n: int) -> dict[str, int]:
    return {"n": n}


async def test_types_and_signatures_are_preserved() -> None:
    assert_type(await typed(2, "y", c=2.0), list[str])
    assert_type(await piped(3), dict[str, int])
    assert_type(await Retry().call(piped, 4), dict[str, int])
    assert await typed(2, "y") == ["y", "y"]
    assert await piped(3) == {"n": 3}
    assert list(inspect.signature(typed).parameters) == ["a", "b", "c"]
    assert typed.__name__ == "typed"
    assert piped.__qualname__ == "piped"
