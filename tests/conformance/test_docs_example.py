"""The store of ``docs/stores.md`` ("A tiny store"), run through the whole conformance suite
over a memory store and over a fake Redis: the documented example is a working store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from resilience import MemoryStore, RedisStore, SlidingWindowLimiter
from resilience.testing.conformance import StoreConformance

DOC = Path(__file__).resolve().parents[2] / "docs" / "stores.md"


def _example() -> Any:
    """``CountingStore``, executed from the page's first code block after "A tiny store"."""
    text = DOC.read_text("utf-8")
    section = text[text.index("## A tiny store") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)
    return namespace["CountingStore"]


CountingStore = _example()


class TestDocsExample(StoreConformance):
    @pytest.fixture(params=["memory", "fakeredis"])
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
        if request.param == "memory":
            yield CountingStore(MemoryStore())
            return
        inner = RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
        yield CountingStore(inner)
        await inner.aclose()

    @pytest.fixture
    async def unavailable_store(self, store: Any) -> AsyncIterator[Any]:
        if store.decides_locally:
            yield None
            return
        server = fakeredis.FakeServer()
        server.connected = False
        inner = RedisStore(fakeredis.FakeAsyncRedis(server=server), timeout=0.5)
        yield CountingStore(inner)
        await inner.aclose()


async def test_the_example_counts_its_decisions_and_is_not_wrapped() -> None:
    store = CountingStore(MemoryStore())
    counts = store.counts
    lim = SlidingWindowLimiter(2, 60.0, store=store, guard=0)
    assert lim.store is store  # decides locally: no FallbackStore around it
    assert [(await lim.try_acquire()).allowed for _ in range(3)] == [True, True, False]
    assert counts == {"window_acquire": 3}
