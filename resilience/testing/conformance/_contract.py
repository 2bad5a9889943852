"""Contract conformance: what every operation of :mod:`resilience.stores.base` shares: the
capabilities a store declares, the token rule, the error contract and pushed transitions."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from resilience.errors import StoreUnavailable
from resilience.stores._events import StoreObservers
from resilience.stores.base import MAX_TOKEN_LENGTH, BreakerSpec, Store, WindowLimit
from resilience.testing.conformance._breaker import S, spec, trip

__all__ = ["ContractConformance"]

_TOKEN = re.compile(f"[0-9a-z]{{1,{MAX_TOKEN_LENGTH}}}")

#: Pairs that a naive ``f"{name}:{key}"`` (or a tag with spaces) would confuse.
_PAIRS = [
    ("a", ""),
    ("", "a"),
    ("a:b", "c"),
    ("a", "b:c"),
    ("a b", "c"),
    ("a", "b c"),
    ("{x}", "}{"),
    ("ü 🙂", "%C3%BC"),
    ("n", "x" * 10_000),
    ("n", "x" * 10_001),
]

#: How long an unavailable store may take to say so (its own bound plus scheduling noise).
UNAVAILABLE_WITHIN = 5.0


class ContractConformance:
    """The rules every operation shares (a ``store`` fixture gives the store).

    The error-contract tests also need a store of the same kind whose backend cannot be
    reached: override the ``unavailable_store`` fixture to give one (by default there is none,
    and those tests are skipped: a store that is never unavailable, like
    :class:`resilience.MemoryStore`, has nothing to show).
    """

    @pytest.fixture
    def unavailable_store(self) -> Store | None:
        """A store whose backend is down (``None``: the store kind is never unavailable)."""
        return None

    # ------------------------------------------------------------------ capabilities

    async def test_declares_its_capabilities(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.label, str)
        assert store.label
        assert isinstance(store.decides_locally, bool)
        assert isinstance(store.observers, StoreObservers)
        unsubscribe = store.breaker_subscribe(lambda message: None)
        assert callable(unsubscribe)
        unsubscribe()

    async def test_breaker_tags_are_distinct_and_space_free(self, store: Store) -> None:
        tags = [store.breaker_tag(name, key) for name, key in _PAIRS]
        assert all(isinstance(t, str) and " " not in t for t in tags), tags
        assert len(set(tags)) == len(tags), tags
        assert store.breaker_tag("a", "b") == store.breaker_tag("a", "b")  # pure

    # ------------------------------------------------------------------ tokens

    async def test_tokens_follow_the_alphabet(self, store: Store) -> None:
        """Admissions (immediate, reserved, several limits) and probe permits carry distinct
        ``[0-9a-z]`` tokens; an admission refused, a plain ``allow`` and a denial carry none."""
        one = WindowLimit("alpha", 2, 5_000_000)
        two = (one, WindowLimit("alpha2", 10, 5_000_000))
        got = [
            await store.window_acquire((one,), "t", (1,), -1),
            await store.window_acquire(two, "t", (1, 1), -1),
            await store.window_acquire((one,), "t", (1,), 10_000_000),  # reserved
        ]
        assert all(r.allowed for r in got), got
        assert [r.wait_us > 0 for r in got] == [False, False, True]
        tokens = [r.token for r in got]
        assert all(_TOKEN.fullmatch(t) for t in tokens), tokens
        assert len(set(tokens)) == len(tokens), tokens
        refused = await store.window_acquire((one,), "t", (1,), -1)
        assert (refused.allowed, refused.token) == (False, "")

        sp = spec(1, 60, 0.1, probes=2)
        allow = await store.breaker_acquire(sp, "t")
        assert (allow.permit, allow.token) == ("allow", "")
        await trip(store, sp, key="t")
        deny = await store.breaker_acquire(sp, "t")
        assert (deny.permit, deny.token) == ("deny", "")
        await asyncio.sleep(0.15)
        probes = [await store.breaker_acquire(sp, "t") for _ in range(2)]
        assert [p.permit for p in probes] == ["probe", "probe"]
        assert all(_TOKEN.fullmatch(p.token) for p in probes), probes
        assert probes[0].token != probes[1].token

    # ------------------------------------------------------------------ errors

    async def test_an_unavailable_store_raises_store_unavailable(
        self, unavailable_store: Store | None
    ) -> None:
        """Every operation of a store whose backend is down raises
        :class:`resilience.StoreUnavailable`, never a client library's exception, within its
        time bound (twice: the first failure and the fast ones after it)."""
        if unavailable_store is None:
            pytest.skip("this kind of store is never unavailable")
        s = unavailable_store
        lim = (WindowLimit("down", 5, 1_000_000),)
        sp = spec(2, 60, 30, name="down")
        ops: list[Callable[[], Awaitable[object]]] = [
            lambda: s.window_acquire(lim, "k", (1,), -1),
            lambda: s.window_release(lim, "k", (1,), "t1"),
            lambda: s.window_penalize(lim, "k", S),
            lambda: s.breaker_acquire(sp, "k"),
            lambda: s.breaker_record(sp, "k", "fail", 0, "", 0),
            lambda: s.breaker_admin(sp, "k", "state", 0),
            lambda: s.budget_deposit("down", 1, 10),
            lambda: s.budget_withdraw("down", 1, 200_000, 1, 10),
            lambda: s.presence_announce(["down"], "k", "m1", S),
        ]
        r: Any = s
        if getattr(r, "registry_put", None) is not None:  # the optional registry section
            ops += [
                lambda: r.registry_list(),
                lambda: r.registry_hold("down", S),
                lambda: r.registry_holds(),
                lambda: r.registry_audit("{}"),
                lambda: r.registry_usage(lim, "k"),
            ]
        for _ in range(2):
            for op in ops:
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await op()
                assert time.monotonic() - t0 < UNAVAILABLE_WITHIN

    # ------------------------------------------------------------------ pushed transitions

    async def test_pushed_transitions_name_the_breaker_by_its_tag(self, store: Store) -> None:
        """A store that pushes transitions (it announces each subscription with ``""``) names
        the breaker in each message by :meth:`~resilience.stores.base.BreakerOps.breaker_tag`:
        ``"<tag> <gen> <state>"``. A store whose decisions are local pushes nothing."""
        messages: list[str] = []
        got = asyncio.Event()
        expected = ""

        def on_message(message: str) -> None:
            messages.append(message)
            if not message or message == expected:
                got.set()

        unsubscribe = store.breaker_subscribe(on_message)
        try:
            try:
                await asyncio.wait_for(got.wait(), 0.2 if store.decides_locally else 5.0)
            except asyncio.TimeoutError:
                if store.decides_locally:
                    return  # nothing pushed, as it should be
                pytest.skip("this store pushes no breaker transitions")
            assert not store.decides_locally, messages
            assert messages[0] == ""
            sp = BreakerSpec("pushed", 1, 60 * S, 30 * S, 30 * S, 1, 1, 30 * S)
            tripped = await trip(store, sp, key="a b")
            expected = f"{store.breaker_tag('pushed', 'a b')} {tripped.gen} open"
            deadline = time.monotonic() + 5.0
            while expected not in messages:  # (a "" may come first: a re-subscription)
                got.clear()
                await asyncio.wait_for(got.wait(), max(deadline - time.monotonic(), 0.0))
        finally:
            unsubscribe()
