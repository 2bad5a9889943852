"""``status(store)``: what a store holds, read through its registry, as typed dataclasses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from resilience.stores.base import BreakerSpec, ConcurrencySpec, RegistryEntry, WindowLimit

__all__ = [
    "BreakerKeyStatus",
    "BreakerStatus",
    "BudgetStatus",
    "ConcurrencyStatus",
    "LimiterKeyStatus",
    "LimiterStatus",
    "ProcessStatus",
    "Status",
    "breaker_spec",
    "limiter_limit",
    "registry",
    "status",
]

T = TypeVar("T")

#: Presence of a decider counts as live this long after its last announcement (the
#: announcements' TTL with the default interval: three times 2 s).
PRESENCE_TTL_US = 6_000_000
#: Store reads in flight at once while building a status.
_PARALLEL = 16


@dataclass(frozen=True)
class LimiterKeyStatus:
    """One key (tenant) of a limiter: units counted in the window now (reservations ahead
    included) against the limit, and the seconds left of its own pause (0: none)."""

    key: str
    used: int
    limit: int
    paused_for: float
    #: The limit learned from the upstream's headers in force for this key (``None``: none).
    learned: int | None = None


@dataclass(frozen=True)
class LimiterStatus:
    """A limiter: its settings (seconds), the operator's hold of its name (seconds left, 0:
    none) and its keys, most recently seen first (idle keys included: their usage is 0)."""

    name: str
    limit: int
    window: float
    guard: float
    held_for: float
    keys: tuple[LimiterKeyStatus, ...]
    keys_total: int
    registered_ago: float


@dataclass(frozen=True)
class BreakerKeyStatus:
    """One key of a breaker: its state, failures in the window (closed), seconds until the
    break ends (open), probe permits out (half-open)."""

    key: str
    state: str
    failures: int
    open_for: float
    probes_out: int


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker: its settings (seconds) and its keys."""

    name: str
    failure_threshold: int
    window: float
    break_duration: float
    probe_lease: float
    half_open_max_calls: int
    keys: tuple[BreakerKeyStatus, ...]
    keys_total: int
    registered_ago: float


@dataclass(frozen=True)
class BudgetStatus:
    """A retry budget over its window: requests and retries counted, and the retries still
    allowed (``balance``: ``ratio * requests + reserve - retries``, at least 0)."""

    name: str
    ratio: float
    reserve: int
    window: int
    requests: int
    retries: int
    balance: int
    registered_ago: float


@dataclass(frozen=True)
class ConcurrencyStatus:
    """A concurrency limit, as registered: its settings and keys, and the permits in flight
    and waiters queued over those keys (``None`` for a store that cannot tell)."""

    name: str
    settings: Mapping[str, int]
    keys: tuple[str, ...]
    in_flight: int | None = None
    waiting: int | None = None


@dataclass(frozen=True)
class ProcessStatus:
    """A live decider (one process's shared store), from presence: its id, its pid, and
    the limiters it announced."""

    member: str
    pid: int
    limiters: tuple[str, ...]


@dataclass(frozen=True)
class Status:
    """Everything :func:`status` found, and when (``time.time()``)."""

    store: str
    at: float
    limiters: tuple[LimiterStatus, ...] = ()
    breakers: tuple[BreakerStatus, ...] = ()
    budgets: tuple[BudgetStatus, ...] = ()
    concurrency: tuple[ConcurrencyStatus, ...] = ()
    processes: tuple[ProcessStatus, ...] = field(default=())


def limiter_limit(entry: RegistryEntry) -> WindowLimit:
    """The :class:`WindowLimit` a registered limiter uses (its window with its guard)."""
    s = entry.settings
    window_us = max(int(s.get("window_us", 1)) + int(s.get("guard_us", 0)), 1)
    return WindowLimit(entry.name, max(int(s.get("limit", 1)), 1), window_us)


def breaker_spec(entry: RegistryEntry) -> BreakerSpec:
    """The :class:`BreakerSpec` of a registered breaker."""
    s = entry.settings
    return BreakerSpec(
        entry.name,
        int(s.get("failure_threshold", 1)),
        int(s.get("window_us", 1)),
        int(s.get("break_us", 1)),
        int(s.get("max_break_us", s.get("break_us", 1))),
        int(s.get("half_open_max_calls", 1)),
        int(s.get("success_threshold", 1)),
        int(s.get("probe_lease_us", 1)),
    )


async def registry(store: Any) -> tuple[RegistryEntry, ...]:
    """The store's registry, or ``TypeError`` naming a store that has none."""
    read = getattr(store, "registry_list", None)
    if read is None:
        raise TypeError(
            f"store {getattr(store, 'label', store)!r} has no registry (registry_list): "
            "the operator tools need one (docs/stores.md)"
        )
    entries: tuple[RegistryEntry, ...] = await read()
    return entries


async def _bounded(aws: Sequence[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(_PARALLEL)

    async def one(aw: Awaitable[T]) -> T:
        async with gate:
            return await aw

    return list(await asyncio.gather(*(one(aw) for aw in aws)))


async def _limiter(store: Any, e: RegistryEntry, holds: Mapping[str, int], n: int) -> LimiterStatus:
    lim = limiter_limit(e)
    keys = e.keys[:n]

    async def one(key: str) -> LimiterKeyStatus:
        (used,) = await store.registry_usage((lim,), key)
        paused = await store.window_paused((lim,), key)
        read = getattr(store, "registry_learned", None)
        learned = (await read((lim,), key))[0] if read is not None else 0
        return LimiterKeyStatus(key, int(used), lim.limit, paused / 1e6, int(learned) or None)

    s = e.settings
    return LimiterStatus(
        e.name,
        lim.limit,
        int(s.get("window_us", 0)) / 1e6,
        int(s.get("guard_us", 0)) / 1e6,
        holds.get(e.name, 0) / 1e6,
        tuple(await _bounded([one(k) for k in keys])),
        len(e.keys),
        e.age_us / 1e6,
    )


async def _concurrency(store: Any, e: RegistryEntry, n: int) -> ConcurrencyStatus:
    s = e.settings
    spec = ConcurrencySpec(e.name, int(s.get("max_in_flight", 1)), int(s.get("lease_us", 1)))
    keys = e.keys[:n]
    read = getattr(store, "registry_concurrency", None)
    if read is None:
        return ConcurrencyStatus(e.name, dict(s), keys)
    counts = await _bounded([read(spec, k) for k in keys])
    return ConcurrencyStatus(
        e.name, dict(s), keys, sum(c[0] for c in counts), sum(c[1] for c in counts)
    )


async def _breaker(store: Any, e: RegistryEntry, n: int) -> BreakerStatus:
    spec = breaker_spec(e)

    async def one(key: str) -> BreakerKeyStatus:
        r = await store.breaker_admin(spec, key, "state", 0)
        probes = await store.registry_probes(spec, key) if r.state == "half_open" else 0
        open_for = r.wait_us / 1e6 if r.state == "open" else 0.0
        return BreakerKeyStatus(key, r.state, r.failures, open_for, probes)

    return BreakerStatus(
        e.name,
        spec.failure_threshold,
        spec.window_us / 1e6,
        spec.break_us / 1e6,
        spec.probe_lease_us / 1e6,
        spec.half_open_max_calls,
        tuple(await _bounded([one(k) for k in e.keys[:n]])),
        len(e.keys),
        e.age_us / 1e6,
    )


async def _budget(store: Any, e: RegistryEntry) -> BudgetStatus:
    s = e.settings
    window = max(int(s.get("window_s", 10)), 1)
    ratio_ppm, reserve = int(s.get("ratio_ppm", 0)), int(s.get("reserve", 0))
    # Zero deposits and a zero allowance: always refused, so a read that counts nothing.
    r = await store.budget_withdraw(e.name, 0, 0, 0, window)
    balance = max((ratio_ppm * r.requests) // 1_000_000 + reserve - r.retries, 0)
    return BudgetStatus(
        e.name, ratio_ppm / 1e6, reserve, window, r.requests, r.retries, balance, e.age_us / 1e6
    )


async def _processes(store: Any, limiters: Sequence[RegistryEntry], n: int) -> list[ProcessStatus]:
    pairs = [(e.name, k) for e in limiters for k in e.keys[:n]]
    if not pairs:
        return []
    read = store.registry_members
    found = await _bounded([read((name,), key, PRESENCE_TTL_US) for name, key in pairs])
    seen: dict[str, set[str]] = {}
    for (name, _), (members,) in zip(pairs, found, strict=True):
        for m in members:
            seen.setdefault(m, set()).add(name)
    return [ProcessStatus(m, _pid(m), tuple(sorted(names))) for m, names in sorted(seen.items())]


def _pid(member: str) -> int:
    try:  # member_id(): 14 hex digits of time, 8 of pid, 8 random
        return int(member[14:22], 16)
    except ValueError:
        return 0


async def status(store: Any, *, keys_per_name: int = 20) -> Status:
    """What ``store`` holds now: every registered limiter (usage of its ``keys_per_name``
    most recent keys against the limit, pauses, the hold of its name), breaker (state,
    failures, break left, probes out per key), retry budget (balance), concurrency limit
    (as registered), and the processes alive (from presence, Redis only).

    Reads only (one round trip per key and policy, at most 16 in flight). Raises
    ``TypeError`` for a store without a registry, :class:`resilience.StoreUnavailable`
    when the store cannot answer.
    """
    entries = await registry(store)
    holds = await store.registry_holds()
    by_kind: dict[str, list[RegistryEntry]] = {}
    for e in entries:
        by_kind.setdefault(e.kind, []).append(e)
    limiters = by_kind.get("limiter", [])
    n = keys_per_name
    return Status(
        store=str(getattr(store, "label", "")),
        at=time.time(),
        limiters=tuple([await _limiter(store, e, holds, n) for e in limiters]),
        breakers=tuple([await _breaker(store, e, n) for e in by_kind.get("breaker", [])]),
        budgets=tuple([await _budget(store, e) for e in by_kind.get("budget", [])]),
        concurrency=tuple(
            [await _concurrency(store, e, n) for e in by_kind.get("concurrency", [])]
        ),
        processes=tuple(await _processes(store, limiters, n)),
    )
