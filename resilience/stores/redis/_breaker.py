"""Circuit-breaker decisions of the Redis store: ``lua/breaker_*.lua``, on Redis ``TIME``.

Three scripts: ``breaker_acquire`` (allow / deny / probe, and the open -> half-open
transition), ``breaker_record`` (an outcome, and the trip, reopen and close transitions) and
``breaker_admin`` (operator actions). All three touch only the breaker's three keys, which
share one hash tag (:func:`resilience.stores.redis._keys.breaker_keys`). Every transition is
also ``PUBLISH``-ed on the store's channel (:func:`resilience.stores.redis._keys.breaker_channel`),
which :meth:`RedisBreaker.breaker_subscribe` follows (:mod:`resilience.stores.redis._pubsub`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from resilience.stores._unknown_state import UnknownStates
from resilience.stores.base import (
    BreakerAction,
    BreakerEventCallback,
    BreakerOutcomeName,
    BreakerReply,
    BreakerSpec,
    BreakerStateName,
)
from resilience.stores.redis._core import RedisCore, as_str, nonce
from resilience.stores.redis._keys import breaker_channel, breaker_keys, breaker_tag
from resilience.stores.redis._pubsub import BreakerEvents

__all__ = ["RedisBreaker"]

_KEY_CACHE_MAX = 10_000


def _spec_args(spec: BreakerSpec) -> list[int | str]:
    return [
        spec.failure_threshold,
        spec.window_us,
        spec.break_us,
        spec.max_break_us,
        spec.half_open_max_calls,
        spec.success_threshold,
        spec.probe_lease_us,
    ]


def _reply(r: Any) -> BreakerReply:
    """A script's reply: ``{state, gen, wait_us, permit, token, old, stale, failures,
    unknown}`` (``unknown`` is checked by :meth:`RedisBreaker._checked`)."""
    return BreakerReply(
        cast(BreakerStateName, as_str(r[0])),
        int(r[1]),
        int(as_str(r[2])),
        as_str(r[3]),
        as_str(r[4]),
        as_str(r[5]),
        bool(int(r[6])),
        int(r[7]),
    )


class RedisBreaker(RedisCore):
    """Breaker state in Redis: a state hash, a failure log and a probe-lease set per key.

    Owns the channel of its transitions, their subscriptions (``_events``), a cache of the
    keys of each breaker (``_bkeys``) and the breaker keys it warned about (``_unknown``).
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        #: The pub/sub channel of this store's breaker transitions.
        self.breaker_channel: str = breaker_channel(self.prefix)
        self._events = BreakerEvents(self.open_pubsub, self.breaker_channel)
        self._bkeys: dict[tuple[str, str], list[str]] = {}
        self._unknown = UnknownStates()

    def breaker_subscribe(self, callback: BreakerEventCallback) -> Callable[[], None]:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_subscribe`.

        One background task per store and event loop, started by the first subscriber (see
        :mod:`resilience.stores.redis._pubsub`); :meth:`aclose` stops it.
        """
        return self._events.subscribe(callback)

    def breaker_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_tag`: the hash tag of the
        breaker's keys without braces (``cb:<name>:<key>``, escaped)."""
        return breaker_tag(name, key)

    async def aclose(self) -> None:
        """Stop the breaker-events subscriptions, then close the client."""
        await self._events.stop()
        await super().aclose()

    def _checked(self, r: Any, name: str, key: str) -> BreakerReply:
        if len(r) > 8 and r[8]:
            self._unknown.warn(self.label, name, key, as_str(r[8]))
        return _reply(r)

    def _breaker_keys(self, name: str, key: str) -> list[str]:
        cache = self._bkeys
        keys = cache.get((name, key))
        if keys is None:
            if len(cache) >= _KEY_CACHE_MAX:
                cache.clear()
            keys = cache[(name, key)] = list(breaker_keys(self.prefix, name, key))
        return keys

    async def breaker_acquire(self, spec: BreakerSpec, key: str) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_acquire`."""
        args = _spec_args(spec)
        args += [nonce(), self.breaker_channel]
        r = await self._eval("breaker_acquire", self._breaker_keys(spec.name, key), args)
        return self._checked(r, spec.name, key)

    async def breaker_record(
        self,
        spec: BreakerSpec,
        key: str,
        outcome: BreakerOutcomeName,
        gen: int,
        token: str,
        hint_us: int,
    ) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_record`."""
        args = _spec_args(spec)
        args += [outcome, gen, token, hint_us, nonce(), self.breaker_channel]
        r = await self._eval("breaker_record", self._breaker_keys(spec.name, key), args)
        return self._checked(r, spec.name, key)

    async def breaker_admin(
        self, spec: BreakerSpec, key: str, action: BreakerAction, duration_us: int
    ) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_admin`."""
        args = _spec_args(spec)
        args += [action, duration_us, self.breaker_channel]
        r = await self._eval("breaker_admin", self._breaker_keys(spec.name, key), args)
        return self._checked(r, spec.name, key)
