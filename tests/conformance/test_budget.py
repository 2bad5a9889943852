"""Retry-budget conformance over every store (``resilience.testing.conformance``), and what
only the Redis store does: its keys expire."""

from __future__ import annotations

from typing import Any

from resilience.stores.redis._keys import budget_key
from resilience.testing.conformance import BudgetConformance


class TestBudget(BudgetConformance):
    """Runs with the ``store`` fixture of ``tests/conftest.py``."""


async def test_redis_key_expires(store: Any) -> None:
    client = getattr(store, "client", None)
    if client is None:  # memory store: nothing to expire (O(1) buckets per budget)
        return
    await store.budget_withdraw("ttl", 1, 0, 1, 10)
    key = budget_key(store.prefix, "ttl")
    ttl = await client.pttl(key)
    assert 0 < ttl <= 12_000
    assert len(await client.hgetall(key)) == 3  # one bucket: t, r, q
