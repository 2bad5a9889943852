"""The registry of the Redis store: what exists, operator holds, the audit log.

Everything lives under one hash tag (``P:{reg}:...``, see
:mod:`resilience.stores.redis._keys`), so on a Cluster one slot holds the whole registry and
every script runs on one node: listing what exists needs no scan of every node, and the
names inside keys (escaped or hashed) never have to be guessed back. Policies write it at a
bounded rate (once per process per policy, keys in batches; see
:mod:`resilience.policies._registry`), so that one slot is never hot.

Hold changes are announced on ``P:registry-events`` and followed with the breaker events'
machinery (:mod:`resilience.stores.redis._pubsub`: one background subscription per store and
event loop, reconnecting with backoff, ``""`` on each (re)establishment).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from resilience.stores.base import (
    MAX_AUDIT_ENTRIES,
    MAX_REGISTRY_KEYS,
    BreakerSpec,
    ConcurrencySpec,
    RegistryEntry,
    RegistryEventCallback,
    RegistryKind,
    WindowLimit,
)
from resilience.stores.redis._core import RedisCore, as_str
from resilience.stores.redis._keys import (
    breaker_keys,
    concurrency_keys,
    presence_key,
    registry_channel,
    registry_key,
    registry_keys_key,
    window_keys,
)
from resilience.stores.redis._pubsub import BreakerEvents

__all__ = ["RedisRegistry"]

#: Registry and audit keys expire this long after their last write (ms): 30 days.
REGISTRY_TTL_MS = 30 * 24 * 3600 * 1000


class RedisRegistry(RedisCore):
    """Registry entries, holds and audit entries in Redis (see the module docs)."""

    def __init__(self, client: aioredis.Redis | RedisCluster, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        #: The pub/sub channel of hold changes.
        self.registry_channel: str = registry_channel(self.prefix)
        self._registry_events = BreakerEvents(self.open_pubsub, self.registry_channel)

    async def aclose(self) -> None:
        """Stop the registry subscriptions, then close the client."""
        await self._registry_events.stop()
        await super().aclose()

    def _reg(self, part: str) -> str:
        return registry_key(self.prefix, part)

    def _limit_keys(self, limits: Sequence[WindowLimit], key: str) -> list[str]:
        keys: list[str] = []
        for lim in limits:
            keys.extend(window_keys(self.prefix, lim.name, key))
        return keys

    async def registry_put(
        self, kind: RegistryKind, name: str, settings: Mapping[str, int], keys: Sequence[str]
    ) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_put`."""
        text = json.dumps({k: int(v) for k, v in settings.items()}, sort_keys=True)
        await self._eval(
            "registry_put",
            [self._reg("e"), self._reg("t"), registry_keys_key(self.prefix, kind, name)],
            [f"{kind}:{name}", text, REGISTRY_TTL_MS, MAX_REGISTRY_KEYS, *keys],
        )

    async def registry_list(self) -> tuple[RegistryEntry, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_list` (two round trips:
        the entries, then the keys of each)."""
        r = await self._eval("registry_list", [self._reg("e"), self._reg("t")], [])
        rows: list[tuple[str, str, dict[str, int], int]] = []
        for i in range(0, len(r) - 2, 3):
            kind, _, name = as_str(r[i]).partition(":")
            try:
                settings = {str(k): int(v) for k, v in json.loads(as_str(r[i + 1])).items()}
            except (ValueError, AttributeError):
                settings = {}  # written by hand or by another version: keep the name
            rows.append((kind, name, settings, int(as_str(r[i + 2]))))
        rows.sort()
        keys: list[Any] = []
        if rows:
            zkeys = [registry_keys_key(self.prefix, kind, name) for kind, name, _, _ in rows]
            keys = await self._eval("registry_keys", zkeys, [MAX_REGISTRY_KEYS])
        return tuple(
            RegistryEntry(
                cast(RegistryKind, kind),
                name,
                settings,
                tuple(as_str(k) for k in ks),
                age,
            )
            for (kind, name, settings, age), ks in zip(rows, keys, strict=True)
        )

    async def registry_hold(self, name: str, duration_us: int) -> int:
        """See :meth:`resilience.stores.base.RegistryOps.registry_hold`."""
        r = await self._eval(
            "registry_hold", [self._reg("h")], [name, max(duration_us, 0), self.registry_channel]
        )
        return int(r)

    async def registry_holds(self) -> Mapping[str, int]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_holds`."""
        r = await self._eval("registry_holds", [self._reg("h")], [])
        return {as_str(r[i]): int(as_str(r[i + 1])) for i in range(0, len(r) - 1, 2)}

    def registry_subscribe(self, callback: RegistryEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_subscribe` (one background
        subscription per store and event loop; :meth:`aclose` stops it)."""
        return self._registry_events.subscribe(callback)

    async def registry_audit(self, entry: str) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_audit`."""
        await self._eval(
            "registry_audit", [self._reg("a")], [entry, MAX_AUDIT_ENTRIES, REGISTRY_TTL_MS]
        )

    async def registry_audit_read(self, count: int) -> tuple[str, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_audit_read`."""
        r = await self._eval("registry_audit_read", [self._reg("a")], [max(int(count), 0)])
        return tuple(as_str(x) for x in r)

    async def registry_members(
        self, names: Sequence[str], key: str, ttl_us: int
    ) -> tuple[tuple[str, ...], ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_members`."""
        keys = [presence_key(self.prefix, n, key) for n in names]
        r = await self._eval("registry_members", keys, [ttl_us])
        return tuple(tuple(sorted(as_str(m) for m in ms)) for ms in r)

    async def registry_probes(self, spec: BreakerSpec, key: str) -> int:
        """See :meth:`resilience.stores.base.RegistryOps.registry_probes`."""
        leases = breaker_keys(self.prefix, spec.name, key)[2]
        return int(await self._eval("registry_probes", [leases], []))

    async def registry_learned(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_learned`."""
        r = await self._eval("registry_learned", self._limit_keys(limits, key), [])
        return tuple(int(v) for v in cast("list[Any]", r))

    async def registry_concurrency(self, spec: ConcurrencySpec, key: str) -> tuple[int, int]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_concurrency`."""
        holders, _, leases, _ = concurrency_keys(self.prefix, spec.name, key)
        r = cast("list[Any]", await self._eval("registry_concurrency", [holders, leases], []))
        return int(r[0]), int(r[1])

    async def registry_usage(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_usage`."""
        args = [lim.window_us for lim in limits]
        r = await self._eval("registry_usage", self._limit_keys(limits, key), args)
        return tuple(int(x) for x in r)

    async def registry_clear(self, limits: Sequence[WindowLimit], key: str, *, log: bool) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_clear`."""
        await self._eval("registry_clear", self._limit_keys(limits, key), ["1" if log else "0"])
