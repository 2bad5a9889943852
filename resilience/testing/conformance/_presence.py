"""Presence conformance: :class:`resilience.stores.base.PresenceOps` (the fair shares of the
``"local"`` fallback are computed from its answers)."""

from __future__ import annotations

import asyncio

from resilience.stores._fleet import member_id
from resilience.stores.base import Presence, Store

__all__ = ["PresenceConformance"]


def _ids(n: int) -> list[str]:
    return [member_id() for _ in range(n)]


class PresenceConformance:
    """The presence part of the store protocol (a ``store`` fixture gives the store)."""

    async def test_presence_counts_and_ranks(self, store: Store) -> None:
        """Every member that announced within the TTL is counted; once all have announced,
        their ranks are 0..n-1 in the order of their ids, per limit name, in one call. A store
        whose decisions are local is private to one process: always alone."""
        members = _ids(5)
        announce = store.presence_announce
        for m in members:
            await announce(["a", "b"], "k", m, 10_000_000)
        seen = {m: await announce(["a", "b"], "k", m, 10_000_000) for m in members}
        if store.decides_locally:
            assert all(v == (Presence(1, 0), Presence(1, 0)) for v in seen.values())
            return
        for m, (a, b) in seen.items():
            assert a == b == Presence(5, sorted(members).index(m))
        # Another key, another set: one member alone there.
        assert await announce(["a"], "other", members[3], 10_000_000) == (Presence(1, 0),)

    async def test_presence_forgets_members_after_the_ttl(self, store: Store) -> None:
        announce = store.presence_announce
        old, new = sorted(_ids(2))
        # A TTL of 1 s: two announcements a loaded machine (or an emulated Lua) makes back to
        # back must both be alive; 1.2 s later only the one made again is.
        await announce(["a"], "ttl", old, 1_000_000)
        assert (await announce(["a"], "ttl", new, 1_000_000))[0].members == (
            1 if store.decides_locally else 2
        )
        await asyncio.sleep(1.2)
        assert await announce(["a"], "ttl", new, 1_000_000) == (Presence(1, 0),)
