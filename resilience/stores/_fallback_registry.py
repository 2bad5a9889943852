"""The registry operations of :class:`resilience.FallbackStore`: the primary's, best effort.

A registry write (:meth:`~resilience.stores.base.RegistryOps.registry_put`) comes from a
policy's background task and must never fail anything: an unavailable primary, a primary
that answers an error, or one without a registry, is logged once and ignored. Reads and
operator actions go to the primary and raise as it does (the operator must know), except
``registry_holds`` and ``registry_subscribe`` of a primary without a registry: none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from resilience.errors import ResilienceError
from resilience.stores.base import (
    BreakerSpec,
    ConcurrencySpec,
    RegistryEntry,
    RegistryEventCallback,
    RegistryKind,
    Store,
    WindowLimit,
)

__all__ = ["FallbackRegistry"]

logger = logging.getLogger("resilience")


def _no_op() -> None:
    return None


class FallbackRegistry:
    """Mixed into :class:`resilience.FallbackStore` (which sets ``primary`` and ``label``)."""

    primary: Store
    label: str
    _registry_warned: bool = False

    def _registry(self, op: str) -> Any:
        fn = getattr(self.primary, op, None)
        if fn is None:
            raise TypeError(f"store {self.label} has no registry ({op}): see docs/stores.md")
        return fn

    async def registry_put(
        self, kind: RegistryKind, name: str, settings: Mapping[str, int], keys: Sequence[str]
    ) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_put`: best effort, never
        raises (a failure is logged once per store)."""
        put = getattr(self.primary, "registry_put", None)
        if put is None:
            return
        try:
            await put(kind, name, settings, keys)
        except ResilienceError as exc:
            if not self._registry_warned:
                self._registry_warned = True
                logger.warning(
                    "store %s: could not register %s %r for the operator tools (%s); "
                    "calls are not affected",
                    self.label,
                    kind,
                    name,
                    exc,
                )

    async def registry_list(self) -> tuple[RegistryEntry, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_list` (the primary's)."""
        r: tuple[RegistryEntry, ...] = await self._registry("registry_list")()
        return r

    async def registry_hold(self, name: str, duration_us: int) -> int:
        """See :meth:`resilience.stores.base.RegistryOps.registry_hold` (the primary's)."""
        return int(await self._registry("registry_hold")(name, duration_us))

    async def registry_holds(self) -> Mapping[str, int]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_holds` (the primary's; none
        without a registry)."""
        fn = getattr(self.primary, "registry_holds", None)
        if fn is None:
            return {}
        r: Mapping[str, int] = await fn()
        return r

    def registry_subscribe(self, callback: RegistryEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_subscribe` (the primary's;
        a primary without a registry pushes nothing)."""
        fn = getattr(self.primary, "registry_subscribe", None)
        if fn is None:
            return _no_op
        unsubscribe: Callable[[], None] = fn(callback)
        return unsubscribe

    async def registry_audit(self, entry: str) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_audit` (the primary's)."""
        await self._registry("registry_audit")(entry)

    async def registry_audit_read(self, count: int) -> tuple[str, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_audit_read`."""
        r: tuple[str, ...] = await self._registry("registry_audit_read")(count)
        return r

    async def registry_members(
        self, names: Sequence[str], key: str, ttl_us: int
    ) -> tuple[tuple[str, ...], ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_members` (the primary's)."""
        r: tuple[tuple[str, ...], ...] = await self._registry("registry_members")(
            names, key, ttl_us
        )
        return r

    async def registry_probes(self, spec: BreakerSpec, key: str) -> int:
        """See :meth:`resilience.stores.base.RegistryOps.registry_probes` (the primary's)."""
        return int(await self._registry("registry_probes")(spec, key))

    async def registry_learned(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_learned` (the primary's)."""
        r: tuple[int, ...] = await self._registry("registry_learned")(limits, key)
        return r

    async def registry_concurrency(self, spec: ConcurrencySpec, key: str) -> tuple[int, int]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_concurrency` (the
        primary's)."""
        r: tuple[int, int] = await self._registry("registry_concurrency")(spec, key)
        return r

    async def registry_usage(self, limits: Sequence[WindowLimit], key: str) -> tuple[int, ...]:
        """See :meth:`resilience.stores.base.RegistryOps.registry_usage` (the primary's)."""
        r: tuple[int, ...] = await self._registry("registry_usage")(limits, key)
        return r

    async def registry_clear(self, limits: Sequence[WindowLimit], key: str, *, log: bool) -> None:
        """See :meth:`resilience.stores.base.RegistryOps.registry_clear` (the primary's)."""
        await self._registry("registry_clear")(limits, key, log=log)
