"""The registry of the in-process store: what exists, operator holds, the audit log.

One process, so everything is a dict: the same semantics as the Redis store's
(``redis/lua/registry_*.lua``), see :class:`resilience.stores.base.RegistryOps`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

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
from resilience.stores.memory._core import MemoryCore

if TYPE_CHECKING:
    from resilience.stores.memory._breaker import _Breaker
    from resilience.stores.memory._concurrency import _Slots
    from resilience.stores.memory._log import Log

__all__ = ["MemoryRegistry"]

logger = logging.getLogger("resilience")


class _Entry:
    __slots__ = ("keys", "seen", "settings")

    def __init__(self) -> None:
        self.settings: dict[str, int] = {}
        self.keys: OrderedDict[str, None] = OrderedDict()  # oldest first
        self.seen = 0


class MemoryRegistry(MemoryCore):
    """Registry entries, holds and audit entries in process memory."""

    _logs: dict[tuple[str, str], Log]  # the window's logs (MemoryWindow)
    _breakers: dict[tuple[str, str], _Breaker]  # the breakers (MemoryBreaker)
    _slots: dict[tuple[str, str], _Slots]  # the concurrency limits (MemoryConcurrency)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._holds: dict[str, int] = {}
        self._audit: deque[str] = deque(maxlen=MAX_AUDIT_ENTRIES)
        self._registry_callbacks: dict[int, RegistryEventCallback] = {}

    async def registry_put(
        self, kind: RegistryKind, name: str, settings: Mapping[str, int], keys: Sequence[str]
    ) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_put`."""
        e = self._entries.get((kind, name))
        if e is None:
            e = self._entries[(kind, name)] = _Entry()
        e.settings = {k: int(v) for k, v in settings.items()}
        e.seen = self._now_us()
        for k in keys:
            e.keys[k] = None
            e.keys.move_to_end(k)
        while len(e.keys) > MAX_REGISTRY_KEYS:
            e.keys.popitem(last=False)

    async def registry_list(self) -> tuple[RegistryEntry, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_list`."""
        now = self._now_us()
        return tuple(
            RegistryEntry(kind, name, dict(e.settings), tuple(reversed(e.keys)), now - e.seen)  # type: ignore[arg-type]
            for (kind, name), e in sorted(self._entries.items())
        )

    async def registry_hold(self, name: str, duration_us: int) -> int:
        """See :meth:`resilience.stores.base.RegistryOps.registry_hold`."""
        if duration_us > 0:
            self._holds[name] = self._now_us() + duration_us
        else:
            self._holds.pop(name, None)
        loop = asyncio.get_running_loop()
        for cb in tuple(self._registry_callbacks.values()):
            loop.call_soon(_call, cb, "hold")
        return max(duration_us, 0)

    async def registry_holds(self) -> Mapping[str, int]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_holds`."""
        now = self._now_us()
        for name in [n for n, until in self._holds.items() if until <= now]:
            del self._holds[name]
        return {n: until - now for n, until in self._holds.items()}

    def registry_subscribe(self, callback: RegistryEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_subscribe`: in-process."""
        cid = id(callback)
        while cid in self._registry_callbacks:
            cid += 1
        self._registry_callbacks[cid] = callback
        asyncio.get_running_loop().call_soon(_call, callback, "")

        def unsubscribe() -> None:
            self._registry_callbacks.pop(cid, None)

        return unsubscribe

    async def registry_audit(self, entry: str) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_audit`."""
        self._audit.appendleft(entry)

    async def registry_audit_read(self, count: int) -> tuple[str, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_audit_read`."""
        return tuple(self._audit)[: max(count, 0)]

    async def registry_members(
        self, names: Sequence[str], key: str, ttl_us: int
    ) -> tuple[tuple[str, ...], ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_members` (no one: the
        store is private to this process)."""
        return ((),) * len(names)

    async def registry_probes(self, spec: BreakerSpec, key: str) -> int:
        """See :meth:`resilience.stores.base.RegistryOps.registry_probes`."""
        b = self._breakers.get((spec.name, key))
        now = self._now_us()
        return 0 if b is None else sum(1 for exp in b.leases.values() if exp > now)

    async def registry_usage(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_usage`."""
        now = self._now_us()
        out = []
        for lim in limits:
            log = self._logs.get((lim.name, key))
            used = 0
            if log is not None:
                horizon = now - lim.window_us
                used = sum(
                    w
                    for at, w in zip(log.at[log.head :], log.weights[log.head :], strict=True)
                    if at > horizon
                )
            out.append(used)
        return tuple(out)

    async def registry_learned(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_learned`."""
        now = self._now_us()
        logs = [self._logs.get((lim.name, key)) for lim in limits]
        return tuple(0 if g is None or g.cap_until <= now else g.cap for g in logs)

    async def registry_concurrency(self, spec: ConcurrencySpec, key: str) -> tuple[int, int]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_concurrency`."""
        now = self._now_us()
        s = self._slots.get((spec.name, key))
        if s is None:
            return 0, 0
        return (
            sum(1 for exp in s.holders.values() if exp > now),
            sum(1 for exp in s.queue.values() if exp > now),
        )

    async def registry_clear(self, limits: Sequence[WindowLimit], key: str, *, log: bool) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_clear`."""
        for lim in limits:
            if log:
                self._logs.pop((lim.name, key), None)
            else:
                entry = self._logs.get((lim.name, key))
                if entry is not None:
                    entry.penalty = 0


def _call(cb: RegistryEventCallback, message: str) -> None:
    try:
        cb(message)
    except Exception:
        logger.exception("registry event callback %r failed", cb)
