"""Registry conformance: :class:`resilience.stores.base.RegistryOps` (what the operator tools
read and write). A store without the section (no ``registry_put``) skips these tests: the
section is optional, every policy works without it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience.stores._fleet import member_id
from resilience.stores.base import MAX_REGISTRY_KEYS, ConcurrencySpec, WindowLimit
from resilience.testing.conformance._breaker import spec

__all__ = ["RegistryConformance"]

S = 1_000_000


def _registry(store: Any) -> Any:
    if getattr(store, "registry_put", None) is None:
        pytest.skip("this store has no registry (optional)")
    return store


class RegistryConformance:
    """The registry part of the store protocol (a ``store`` fixture gives the store)."""

    async def test_registry_lists_entries_with_their_latest_settings_and_keys(
        self, store: Any
    ) -> None:
        """Entries sorted by (kind, name); settings replaced by the latest put; keys most
        recently seen first, kept after their state expired; names and keys are any text."""
        s = _registry(store)
        assert await s.registry_list() == ()
        name = "a {odd}:name ü"
        await s.registry_put("limiter", name, {"limit": 5, "window_us": S}, ["k1", "{k2}"])
        await s.registry_put("breaker", "b", {"failure_threshold": 3}, [])
        await asyncio.sleep(0.01)
        await s.registry_put("limiter", name, {"limit": 6, "window_us": S}, ["k1"])
        await s.registry_put("budget", "b", {"ratio_ppm": 200_000}, [])
        entries = await s.registry_list()
        assert [(e.kind, e.name) for e in entries] == [
            ("breaker", "b"),
            ("budget", "b"),
            ("limiter", name),
        ]
        lim = entries[2]
        assert dict(lim.settings) == {"limit": 6, "window_us": S}
        assert lim.keys == ("k1", "{k2}")
        assert all(0 <= e.age_us < 10 * S for e in entries)

    async def test_registry_keeps_the_most_recent_keys(self, store: Any) -> None:
        s = _registry(store)
        keys = [f"k{i}" for i in range(MAX_REGISTRY_KEYS + 5)]
        await s.registry_put("limiter", "many", {"limit": 1}, keys[:-1])
        await asyncio.sleep(0.01)
        await s.registry_put("limiter", "many", {"limit": 1}, keys[-1:])
        (e,) = await s.registry_list()
        assert len(e.keys) == MAX_REGISTRY_KEYS
        assert e.keys[0] == keys[-1]

    async def test_holds_are_replaced_lifted_and_announced(self, store: Any) -> None:
        s = _registry(store)
        heard: list[str] = []
        unsubscribe = s.registry_subscribe(heard.append)
        try:
            for _ in range(100):  # the subscription announces itself with ""
                if heard:
                    break
                await asyncio.sleep(0.02)
            assert heard[:1] == [""]
            assert await s.registry_holds() == {}
            assert await s.registry_hold("api", 30 * S) == 30 * S
            assert await s.registry_hold("api", 10 * S) == 10 * S  # replaced, not extended
            holds = await s.registry_holds()
            assert list(holds) == ["api"]
            assert 9 * S < holds["api"] <= 10 * S
            await s.registry_hold("short", S // 5)
            await asyncio.sleep(0.3)
            assert list(await s.registry_holds()) == ["api"]  # ended holds are not listed
            assert await s.registry_hold("api", 0) == 0
            assert await s.registry_holds() == {}
            for _ in range(100):
                if heard.count("hold") >= 4:
                    break
                await asyncio.sleep(0.02)
            assert heard.count("hold") == 4
        finally:
            unsubscribe()

    async def test_audit_keeps_the_newest_entries_first(self, store: Any) -> None:
        s = _registry(store)
        assert await s.registry_audit_read(5) == ()
        for i in range(3):
            await s.registry_audit(f'{{"n": {i}}}')
        assert await s.registry_audit_read(2) == ('{"n": 2}', '{"n": 1}')
        assert len(await s.registry_audit_read(10)) == 3

    async def test_usage_counts_weights_and_reservations_and_clear_lifts(self, store: Any) -> None:
        """Usage: the weight of the entries that count now, reservations ahead included.
        ``clear`` lifts the penalty and keeps the log; with ``log`` it forgets both."""
        s = _registry(store)
        lim = (WindowLimit("use", 10, 2 * S),)
        assert await s.registry_usage(lim, "k") == (0,)
        assert (await s.window_acquire(lim, "k", (3,), -1)).allowed
        assert (await s.window_acquire(lim, "k", (7,), -1)).allowed
        assert (await s.window_acquire(lim, "k", (2,), 10 * S)).wait_us > 0  # a reservation
        assert await s.registry_usage(lim, "k") == (12,)
        await s.window_penalize(lim, "k", 30 * S)
        await s.registry_clear(lim, "k", log=False)
        assert await s.window_paused(lim, "k") == 0
        assert await s.registry_usage(lim, "k") == (12,)
        await s.registry_clear(lim, "k", log=True)
        assert await s.registry_usage(lim, "k") == (0,)
        assert (await s.window_acquire(lim, "k", (10,), -1)).allowed

    async def test_learned_limits_are_read(self, store: Any) -> None:
        s = _registry(store)
        lim = (WindowLimit("learned", 10, 2 * S), WindowLimit("other", 10, 2 * S))
        assert await s.registry_learned(lim, "k") == (0, 0)
        await s.window_learn(lim[:1], "k", 4, S // 2)
        assert await s.registry_learned(lim, "k") == (4, 0)
        assert await s.registry_learned(lim, "k2") == (0, 0)
        await asyncio.sleep(0.6)  # expired
        assert await s.registry_learned(lim, "k") == (0, 0)

    async def test_concurrency_in_flight_and_waiting_are_read(self, store: Any) -> None:
        s = _registry(store)
        spec = ConcurrencySpec("cc-read", 1, 10 * S)
        assert await s.registry_concurrency(spec, "k") == (0, 0)
        held = await s.concurrency_acquire(spec, "k", "", True)
        queued = await s.concurrency_acquire(spec, "k", "", True)
        assert held.granted
        assert not queued.granted
        assert await s.registry_concurrency(spec, "k") == (1, 1)
        await s.concurrency_release(spec, "k", queued.token)
        await s.concurrency_release(spec, "k", held.token)
        assert await s.registry_concurrency(spec, "k") == (0, 0)

    async def test_members_are_read_without_announcing(self, store: Any) -> None:
        s = _registry(store)
        a, b = sorted(member_id() for _ in range(2))
        await s.presence_announce(["m"], "k", a, 10 * S)
        await s.presence_announce(["m"], "k", b, 10 * S)
        seen = await s.registry_members(["m", "other"], "k", 10 * S)
        if store.decides_locally:
            assert seen == ((), ())
            return
        assert seen == ((a, b), ())
        assert (await s.presence_announce(["m"], "k", a, 10 * S))[0].members == 2

    async def test_probes_out_of_a_half_open_breaker(self, store: Any) -> None:
        s = _registry(store)
        sp = spec(1, 60, 0.05, probes=2, lease=30)
        assert await s.registry_probes(sp, "k") == 0
        await s.breaker_admin(sp, "k", "open", S // 20)
        await asyncio.sleep(0.1)
        assert (await s.breaker_acquire(sp, "k")).permit == "probe"
        assert await s.registry_probes(sp, "k") == 1
