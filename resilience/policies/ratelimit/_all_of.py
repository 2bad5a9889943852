"""Several quotas decided together: :func:`all_of` and :class:`AllOf`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resilience.pipeline import KeySpec
from resilience.policies._validate import (
    check_instance,
    check_key,
    check_name,
    local_shortcut,
    non_negative_seconds,
)
from resilience.policies.ratelimit._decision import _static
from resilience.policies.ratelimit._follow import Follower, quota_names
from resilience.policies.ratelimit._guard import AutoGuard
from resilience.policies.ratelimit._limiter import SlidingWindowLimiter, _WindowPolicy
from resilience.stores.base import WindowLimit

__all__ = ["AllOf", "all_of"]


class AllOf(_WindowPolicy):
    """Several limiters checked and charged in one atomic decision (see :func:`all_of`)."""

    def __init__(
        self,
        limiters: Sequence[SlidingWindowLimiter],
        *,
        key: KeySpec = None,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        if not limiters:
            raise ValueError("limiters must not be empty")
        for i, lim in enumerate(limiters):
            check_instance(f"limiters[{i}]", lim, SlidingWindowLimiter)
        store = limiters[0].store
        if any(lim.store is not store for lim in limiters):
            raise ValueError("limiters must all use the same store to be decided together")
        names = [lim.name for lim in limiters]
        if len(set(names)) != len(names):
            raise ValueError(f"limiters must have distinct names, got {names}")
        self.limiters = tuple(limiters)
        self.store = store
        self._admit = local_shortcut(store, "window_admit")
        self.name = check_name(name) if name is not None else "+".join(names)
        self._limits = tuple(
            WindowLimit(lim.name, lim.limit, round((lim.window + lim.guard) * 1e6))
            for lim in limiters
        )
        # Each adaptive member's guard adapts here too, from the calls this combination admits.
        self._windows = tuple(lim.window for lim in limiters)
        self._guards = tuple(
            None if lim._guards[0] is None else AutoGuard(lim.guard, lim.window) for lim in limiters
        )
        self._adaptive = any(g is not None for g in self._guards)
        quotas = tuple(
            quota_names(lim.name, lim.upstream_quota, lim.cost == 1) if lim.follow_upstream else ()
            for lim in limiters
        )
        self._follow = (
            Follower(self.name, store, self._limits, self._windows, quotas) if any(quotas) else None
        )
        self._cost_specs = tuple(lim.cost for lim in limiters)
        self._static_costs = _static(self._cost_specs)
        self._key = check_key(key)
        self._timeout = None if timeout is None else non_negative_seconds("timeout", timeout)

    def __repr__(self) -> str:
        return f"all_of({', '.join(repr(lim) for lim in self.limiters)})"


def all_of(*limiters: SlidingWindowLimiter, **options: Any) -> AllOf:
    """Combine limiters that share a store: a request is admitted only if *every* quota has
    room, and charges all of them, or none, in one atomic decision.

    Typical use: requests per minute and tokens per minute of an AI API, or 50 per minute and
    1 000 per day. The result is usable wherever a limiter is (``try_acquire``, ``acquire``,
    ``penalize``, decorator, pipeline policy). In direct calls, ``cost`` is an int charged to
    every quota or a mapping from limiter name to cost (others are charged 1), e.g.
    ``await both.acquire(cost={"tpm": 1200})``; as a policy, each limiter's own ``cost``
    option prices the call. Options: ``key``, ``timeout``, ``name`` as for
    :class:`SlidingWindowLimiter`.

    With :class:`resilience.RedisStore` the quotas' keys share the call key's hash tag, so this
    works on Redis Cluster too.
    """
    return AllOf(limiters, **options)
