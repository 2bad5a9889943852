"""Presence announcements of the Redis store (``lua/presence.lua``), on Redis's clock."""

from __future__ import annotations

from collections.abc import Sequence

from resilience.stores.keys import presence_key
from resilience.stores.redis.core import RedisCore

__all__ = ["RedisPresence"]


class RedisPresence(RedisCore):
    """Which deciders share a quota: a zset of ids scored by Redis ``TIME``, trimmed to a TTL."""

    async def presence_announce(
        self, names: Sequence[str], key: str, member: str, ttl_us: int
    ) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.PresenceOps.presence_announce`."""
        keys = [presence_key(self.prefix, n, key) for n in names]
        r = await self._eval("presence", keys, [member, ttl_us])
        return tuple(max(int(x), 1) for x in r)
