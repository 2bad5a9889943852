"""The concurrency-limit part of :class:`resilience.FallbackStore` (a mixin of it).

When the shared store cannot decide, by mode:

``"local"``
    Decide in the private :class:`resilience.MemoryStore`, against this decider's **fair
    share** of ``max_in_flight`` (:func:`resilience.stores._fleet.fair_share` over the
    deciders last seen sharing the limit: the shares of a fleet add up to at most
    ``max_in_flight``; some are 0 when there are more deciders than permits, and those
    deciders' callers wait or are refused), less the permits this decider still holds from
    the shared store (their calls run on). Local tokens are marked ``L``.
``"allow"``
    Grant (token ``A``; renewing or releasing it does nothing).
``"deny"``
    Re-raise :class:`resilience.StoreUnavailable`.

A waiter queued locally asks the shared store first each time it asks again, and moves back
to it (leaving the local queue) as soon as it answers. Permits granted by the shared store
stay there: their renewals and releases go to it (a release it misses is bounded by the
lease). Presence is announced under the limit's name prefixed with ``concurrency/`` (a
limiter named so would share its presence reading).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from resilience.errors import StoreUnavailable
from resilience.stores._fleet import FleetView, fair_share
from resilience.stores.base import (
    ConcurrencyEventCallback,
    ConcurrencyReply,
    ConcurrencySpec,
    Store,
    WindowLimit,
)

if TYPE_CHECKING:
    from resilience.stores.memory import MemoryStore

__all__ = ["FallbackConcurrency", "PRESENCE_PREFIX"]

#: Presence of a concurrency limit is announced under this prefix + its name.
PRESENCE_PREFIX = "concurrency/"
_MAX_CACHED = 10_000
_yield = asyncio.sleep


class FallbackConcurrency:
    """:class:`resilience.stores.base.ConcurrencyOps` with the fallback modes (see the module
    docs); mixed into :class:`resilience.FallbackStore`, whose state it uses."""

    primary: Store
    local: MemoryStore
    mode: str
    fleet: FleetView
    _down: bool

    def _fell_back(self, op: str, exc: StoreUnavailable) -> None:  # pragma: no cover
        raise NotImplementedError

    def _up(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _presence_limits(self, spec: ConcurrencySpec) -> tuple[WindowLimit, ...]:
        """The presence identity of ``spec`` (one object per spec: the fleet view's fast path
        compares identities)."""
        cache: dict[ConcurrencySpec, tuple[WindowLimit, ...]] = self.__dict__.setdefault(
            "_cc_presence", {}
        )
        limits = cache.get(spec)
        if limits is None:
            if len(cache) >= _MAX_CACHED:
                cache.clear()
            limits = cache[spec] = (
                WindowLimit(PRESENCE_PREFIX + spec.name, spec.max_in_flight, 1),
            )
        return limits

    def concurrency_share(self, spec: ConcurrencySpec, key: str) -> ConcurrencySpec:
        """The limit this decider applies alone while the store is down: its fair share of
        ``max_in_flight`` among the deciders last seen sharing it."""
        (p,) = self.fleet.presence(self._presence_limits(spec), key)
        return ConcurrencySpec(spec.name, fair_share(spec.max_in_flight, p), spec.lease_us)

    def _local_tags(self) -> dict[str, str]:
        tags: dict[str, str] = self.__dict__.setdefault("_cc_tags", {})
        return tags

    def _held(self) -> dict[tuple[str, str], set[str]]:
        """The permits this decider holds from the shared store, by (name, key)."""
        held: dict[tuple[str, str], set[str]] = self.__dict__.setdefault("_cc_held", {})
        return held

    def _local_spec(self, spec: ConcurrencySpec, key: str) -> ConcurrencySpec:
        tags = self._local_tags()
        if len(tags) >= _MAX_CACHED:
            tags.clear()
        tags[self.local.concurrency_tag(spec.name, key)] = self.concurrency_tag(spec.name, key)
        share = self.concurrency_share(spec, key)
        shared = len(self._held().get((spec.name, key), ()))
        if not shared:
            return share
        return ConcurrencySpec(share.name, max(share.max_in_flight - shared, 0), share.lease_us)

    async def concurrency_acquire(
        self, spec: ConcurrencySpec, key: str, ticket: str, queue: bool
    ) -> ConcurrencyReply:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_acquire`; falls back
        by mode (see the module docs)."""
        self.fleet.announce(self._presence_limits(spec), key)
        local_ticket = ticket[1:] if ticket.startswith("L") else ""
        try:
            r = await self.primary.concurrency_acquire(
                spec, key, "" if local_ticket else ticket, queue
            )
        except StoreUnavailable as exc:
            await _yield(0)  # before deciding: a cancellation here leaves nothing behind
            if self.mode == "deny":
                raise
            self._fell_back("concurrency_acquire", exc)
            if self.mode == "allow":
                return ConcurrencyReply(True, "A", 0, 0, 0)
            lr = await self.local.concurrency_acquire(
                self._local_spec(spec, key), key, local_ticket, queue
            )
            return lr._replace(token="L" + lr.token) if lr.token else lr
        if self._down:
            self._up()
        if r.granted:
            self._held().setdefault((spec.name, key), set()).add(r.token)
        if local_ticket:  # back on the shared store: leave the local queue
            await self.local.concurrency_release(self._local_spec(spec, key), key, local_ticket)
        return r

    async def concurrency_renew(self, spec: ConcurrencySpec, key: str, token: str) -> bool:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_renew` (routed by
        token; an unavailable primary raises in every mode: the lease runs on)."""
        if token == "A":
            return True
        if token.startswith("L"):
            return await self.local.concurrency_renew(self._local_spec(spec, key), key, token[1:])
        return await self.primary.concurrency_renew(spec, key, token)

    async def concurrency_release(self, spec: ConcurrencySpec, key: str, token: str) -> None:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_release` (routed by
        token; a release the primary misses is bounded by the lease)."""
        if token == "A":
            return
        if token.startswith("L"):
            await self.local.concurrency_release(self._local_spec(spec, key), key, token[1:])
            return
        await self.primary.concurrency_release(spec, key, token)

    def concurrency_subscribe(self, callback: ConcurrencyEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_subscribe`: the
        primary's messages, and the local store's (its tags and tickets translated)."""
        tags = self._local_tags()

        def from_local(message: str) -> None:
            tag, _, rest = message.partition(" ")
            mapped = tags.get(tag)
            if mapped is None:
                return
            if rest == "*":
                callback(f"{mapped} *")
            else:
                callback(" ".join([mapped, *("L" + t for t in rest.split())]))

        subscribe = getattr(self.primary, "concurrency_subscribe", None)
        off_primary: Callable[[], None] = subscribe(callback) if subscribe else _no_op
        off_local = self.local.concurrency_subscribe(from_local)

        def unsubscribe() -> None:
            off_primary()
            off_local()

        return unsubscribe

    def concurrency_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.ConcurrencyOps.concurrency_tag`: the primary's."""
        tag = getattr(self.primary, "concurrency_tag", None)
        return tag(name, key) if tag is not None else f"{name}\x1f{key}".replace(" ", "\x1e")


def _no_op() -> None:
    return None
