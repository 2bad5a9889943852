"""Several quotas decided together: :func:`all_of` and :class:`AllOf`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from resilience.policies.ratelimit._reserve import SettleFn
from resilience.policies.ratelimit._reserving import check_settle, merges
from resilience.stores.base import WindowLimit

__all__ = ["AllOf", "all_of"]


class AllOf(_WindowPolicy):
    """Several limiters checked and charged in one atomic decision (see :func:`all_of`)."""

    _by_name = True

    def __init__(
        self,
        limiters: Sequence[SlidingWindowLimiter],
        *,
        key: KeySpec = None,
        timeout: float | None = None,
        name: str | None = None,
        settle: SettleFn | None = None,
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
        self._merge = all(lim.merge for lim in limiters) and merges(store, self._limits)
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
            Follower(
                self.name,
                store,
                self._limits,
                self._windows,
                quotas,
                min(lim.upstream_window for lim in limiters),
            )
            if any(quotas)
            else None
        )
        self._cost_specs = tuple(lim.cost for lim in limiters)
        self._static_costs = _static(self._cost_specs)
        self._key = check_key(key)
        self._timeout = None if timeout is None else non_negative_seconds("timeout", timeout)
        own = check_settle(settle)
        parts = [(lim.name, lim._settle) for lim in limiters if lim._settle is not None]
        if own is None and parts:
            own = _by_parts(parts)
        self._settle = own

    def __repr__(self) -> str:
        return f"all_of({', '.join(repr(lim) for lim in self.limiters)})"


def _by_parts(parts: list[tuple[str, SettleFn]]) -> SettleFn:
    """One ``settle`` from the limiters' own: each gives its quota's actual cost (an int)."""

    def settle(result: Any) -> Mapping[str, int]:
        return {name: fn(result) for name, fn in parts}  # type: ignore[misc]

    return settle


def all_of(*limiters: SlidingWindowLimiter, **options: Any) -> AllOf:
    """Combine limiters that share a store: a request is admitted only if *every* quota has
    room, and charges all of them, or none, in one atomic decision.

    Typical use: requests per minute and tokens per minute of an AI API, or 50 per minute and
    1 000 per day. The result is usable wherever a limiter is (``try_acquire``, ``acquire``,
    ``penalize``, decorator, pipeline policy). In direct calls, ``cost`` is an int charged to
    every quota or a mapping from limiter name to cost (others are charged 1), e.g.
    ``await both.acquire(cost={"tpm": 1200})``; as a policy, each limiter's own ``cost``
    option prices the call. Options: ``key``, ``timeout``, ``name`` as for
    :class:`SlidingWindowLimiter`, and ``settle``: a callable from the call's result to a
    mapping by limiter name of actual costs, e.g. ``settle=lambda r: {"input":
    r.usage.input_tokens, "output": r.usage.output_tokens}`` (quotas left out keep their
    estimate; an int is refused with ``TypeError``, it would bill every quota the same).
    Without it, the limiters' own ``settle`` options give each quota's actual cost; with
    neither, the estimates stay charged. ``reserve(...)`` works as on a limiter, its
    ``settle`` taking the same mapping.

    With :class:`resilience.RedisStore` the quotas' keys share the call key's hash tag, so this
    works on Redis Cluster too.
    """
    return AllOf(limiters, **options)
