"""Concurrency-limit conformance over every store (``resilience.testing.conformance``), with
a store of each kind whose backend is down for the error contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from resilience import RedisStore
from resilience.stores.base import Store
from resilience.testing.conformance import ConcurrencyConformance
from tests.redis_servers import free_port


class TestConcurrency(ConcurrencyConformance):
    """Runs with the ``store`` fixture of ``tests/conftest.py``."""

    @pytest.fixture
    async def unavailable_store(
        self, store: Store, request: pytest.FixtureRequest
    ) -> AsyncIterator[Store | None]:
        """A store of the same kind as ``store`` whose Redis cannot be reached."""
        kind = request.node.callspec.params["store"]
        if kind == "memory":
            yield None
            return
        if kind == "fakeredis":
            server = fakeredis.FakeServer()
            server.connected = False
            down = RedisStore(fakeredis.FakeAsyncRedis(server=server), timeout=0.5)
        else:
            url = f"redis://127.0.0.1:{free_port()}"
            down = RedisStore.from_url(url, timeout=0.5, cluster=kind == "cluster")
        yield down
        await down.aclose()
