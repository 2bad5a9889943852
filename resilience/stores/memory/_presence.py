"""Presence announcements of the in-process store: one process, so always one decider."""

from __future__ import annotations

from collections.abc import Sequence

from resilience.stores.base import Presence
from resilience.stores.memory._core import MemoryCore

__all__ = ["MemoryPresence"]


class MemoryPresence(MemoryCore):
    """A memory store is private to its process: every quota has exactly one decider."""

    async def presence_announce(
        self, names: Sequence[str], key: str, member: str, ttl_us: int
    ) -> tuple[Presence, ...]:
        """See :meth:`resilience.stores.base.PresenceOps.presence_announce` (always alone:
        one member, rank 0)."""
        return (_ALONE,) * len(names)


_ALONE = Presence(1, 0)
