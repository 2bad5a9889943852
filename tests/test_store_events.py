"""A store reports its availability through one hook (``store.observers``), never by importing
telemetry; the policies install the telemetry observer; capabilities replace class checks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import fakeredis
import pytest

from resilience import (
    CircuitBreaker,
    MemoryStore,
    RedisStore,
    RetryBudget,
    SlidingWindowLimiter,
    StoreUnavailable,
)
from resilience.policies._observe import TELEMETRY
from resilience.stores import FallbackStore, StoreEvents, StoreObservers, with_fallback
from resilience.stores.base import WindowLimit
from resilience.stores.redis._health import health_of
from tests.redis_servers import free_port

LIMITS = (WindowLimit("q", 5, 1_000_000),)


class Recorder(StoreEvents):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_fallback(self, store_label: str, operation: str, mode: str) -> None:
        self.events.append(("fallback", store_label, operation, mode))

    def on_degraded(self, store_label: str, degraded: bool, reason: str) -> None:
        self.events.append(("degraded", store_label, degraded, reason))


def _fake_store() -> tuple[RedisStore, fakeredis.FakeServer]:
    server = fakeredis.FakeServer()
    return RedisStore(fakeredis.FakeAsyncRedis(server=server), timeout=0.5), server


async def test_degraded_mode_is_reported_to_the_observers() -> None:
    store, server = _fake_store()
    rec = Recorder()
    store.observers.add(rec)
    store.observers.add(rec)  # once only
    assert len(store.observers) == 1
    server.connected = False
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await store.window_acquire(LIMITS, "k", (1,), -1)
    assert rec.events == [("degraded", store.label, True, "ConnectionError")]
    server.connected = True
    await asyncio.sleep(0.15)  # the first probe is due within 0.1 s (PROBE_MIN)
    assert (await store.window_acquire(LIMITS, "k", (1,), -1)).allowed
    assert rec.events[-1] == ("degraded", store.label, False, "recovered")
    await store.aclose()


async def test_a_fallback_store_shares_its_primarys_observers() -> None:
    store, server = _fake_store()
    fs = FallbackStore(store, "allow")
    assert fs.observers is store.observers
    rec = Recorder()
    fs.observers.add(rec)
    server.connected = False
    assert (await fs.window_acquire(LIMITS, "k", (1,), -1)).allowed
    assert (await fs.budget_withdraw("b", 1, 0, 0, 10)).allowed
    assert rec.events == [
        ("degraded", store.label, True, "ConnectionError"),
        ("fallback", store.label, "window_acquire", "allow"),
        ("fallback", store.label, "budget_withdraw", "allow"),
    ]
    await store.aclose()


async def test_a_failing_observer_never_reaches_the_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(StoreEvents):
        def on_fallback(self, store_label: str, operation: str, mode: str) -> None:
            raise RuntimeError("observer bug")

    store, server = _fake_store()
    fs = FallbackStore(store, "local")
    fs.observers.add(Broken())
    server.connected = False
    with caplog.at_level(logging.ERROR, logger="resilience"):
        assert (await fs.window_acquire(LIMITS, "k", (1,), -1)).allowed
    assert any("store observer" in r.getMessage() for r in caplog.records)
    await store.aclose()


def test_observers_refuse_what_is_not_an_observer() -> None:
    with pytest.raises(TypeError, match="on_fallback"):
        StoreObservers().add(object())  # type: ignore[arg-type]


async def test_policies_install_the_telemetry_observer_once_per_store() -> None:
    store, _ = _fake_store()
    SlidingWindowLimiter(5, 1.0, store=store, name="a")
    SlidingWindowLimiter(5, 1.0, store=store, name="b")
    CircuitBreaker(3, 10, 5, store=store)
    RetryBudget(store=store)
    assert list(store.observers._observers) == [TELEMETRY]
    assert TELEMETRY in with_fallback(store, "deny").observers  # the same observers
    await store.aclose()


async def test_capabilities_replace_class_checks() -> None:
    memory = MemoryStore()
    store, _ = _fake_store()
    assert memory.decides_locally is True
    assert store.decides_locally is False
    assert FallbackStore(store).decides_locally is False
    assert FallbackStore(memory).decides_locally is True
    assert with_fallback(memory) is memory

    class LocalStore:
        """A third-party store that decides in-process: never wrapped, like MemoryStore."""

        label = "local"
        decides_locally = True

        async def window_acquire(self, *args: Any) -> Any:
            raise AssertionError("not called")

    local = LocalStore()
    assert with_fallback(local) is local  # type: ignore[arg-type,comparison-overlap]
    # The breaker's pushed-event tags come from the store, whichever the store.
    assert FallbackStore(store).breaker_tag("n", "k") == store.breaker_tag("n", "k")
    assert memory.breaker_tag("n", "k") != memory.breaker_tag("n:k", "")
    await store.aclose()


@pytest.mark.redis
async def test_an_unreachable_cluster_falls_back() -> None:
    """A cluster store none of whose nodes answer: the cluster client raises its own
    exceptions (not ``RedisError``): they are ``StoreUnavailable``, and the limiter's fallback
    decides (they used to reach the caller as ``RedisClusterUnreachableError``)."""
    url = f"redis://127.0.0.1:{free_port()}"
    store = RedisStore.from_url(url, cluster=True, timeout=0.3)
    lim = SlidingWindowLimiter(2, 60.0, store=store, name="c", guard=0)
    t0 = time.monotonic()
    got = [(await lim.try_acquire()).allowed for _ in range(3)]
    assert got == [True, True, False]  # alone: the whole limit locally
    assert time.monotonic() - t0 < 5.0
    assert health_of(store).degraded
    await asyncio.wait_for(store.aclose(), 5.0)
