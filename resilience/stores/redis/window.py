"""Sliding-window decisions of the Redis store: one Lua script per decision, Redis TIME clock."""

from __future__ import annotations

from collections.abc import Sequence

from resilience.stores.base import WindowLimit, WindowResult
from resilience.stores.keys import window_keys
from resilience.stores.redis.core import RedisCore, as_str, nonce

__all__ = ["RedisWindow"]

_KEY_CACHE_MAX = 10_000


class RedisWindow(RedisCore):
    """Exact sliding log with reservations (``lua/window_*.lua``)."""

    _wkeys: dict[tuple[tuple[WindowLimit, ...], str], list[str]]

    def _window_keys(self, limits: Sequence[WindowLimit], key: str) -> list[str]:
        cache: dict[tuple[tuple[WindowLimit, ...], str], list[str]] = self.__dict__.setdefault(
            "_wkeys", {}
        )
        ck = (tuple(limits), key)
        keys = cache.get(ck)
        if keys is None:
            if len(cache) >= _KEY_CACHE_MAX:
                cache.clear()
            keys = []
            for lim in limits:
                keys.extend(window_keys(self.prefix, lim.name, key))
            cache[ck] = keys
        return keys

    async def window_acquire(
        self,
        limits: Sequence[WindowLimit],
        key: str,
        costs: Sequence[int],
        max_wait_us: int,
    ) -> WindowResult:
        """See :meth:`resilience.stores.base.WindowOps.window_acquire`."""
        args: list[int | str] = [max_wait_us, nonce()]
        for lim, cost in zip(limits, costs, strict=True):
            args.append(lim.limit)
            args.append(lim.window_us)
            args.append(cost)
        r = await self._eval("window_acquire", self._window_keys(limits, key), args)
        return WindowResult(bool(r[0]), max(int(r[1]), 0), int(r[2]), as_str(r[3]))

    async def window_release(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], token: str
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_release`."""
        await self._eval("window_release", self._window_keys(limits, key), [token, *costs])

    async def window_penalize(
        self, limits: Sequence[WindowLimit], key: str, duration_us: int
    ) -> None:
        """See :meth:`resilience.stores.base.WindowOps.window_penalize`."""
        await self._eval("window_penalize", self._window_keys(limits, key), [duration_us])
