"""Presence announcements of the Redis store (``lua/presence.lua``), on Redis's clock."""

from __future__ import annotations

from collections.abc import Sequence

from resilience.stores.base import Presence
from resilience.stores.redis._core import RedisCore
from resilience.stores.redis._keys import presence_key

__all__ = ["RedisPresence"]


class RedisPresence(RedisCore):
    """Which deciders share a quota: a zset of ids scored by Redis ``TIME``, trimmed to a TTL;
    the script returns, per quota, the live count and the announcer's rank by id."""

    async def presence_announce(
        self, names: Sequence[str], key: str, member: str, ttl_us: int
    ) -> tuple[Presence, ...]:
        """See :meth:`resilience.stores.base.PresenceOps.presence_announce`."""
        keys = [presence_key(self.prefix, n, key) for n in names]
        r = await self._eval("presence", keys, [member, ttl_us])
        out = []
        for i in range(0, len(r) - 1, 2):
            members = max(int(r[i]), 1)
            out.append(Presence(members, min(max(int(r[i + 1]), 0), members - 1)))
        return tuple(out)
