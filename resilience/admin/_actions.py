"""Operator actions: open or close breakers, pause or resume limiters, reset, the audit log.

Each action takes effect fleet-wide at once, through what running processes already follow:

- a breaker's ``open`` / ``close`` / ``reset`` is the store's ``breaker_admin``, which every
  process hears (pushed transitions: a process that cached "closed" re-reads at once, and in
  any case within the breaker's ``state_refresh``);
- a pause of one key is that key's penalty (``window_penalize``), which every decision reads;
- a pause by name is a hold (``registry_hold``): each limiter holds every key of that name,
  keys first used after the pause included, on every Cluster slot; the keys already known
  are also penalized, so callers sleeping on a reserved slot see the pause when they wake.
  ``resume`` lifts the hold and the penalties (an upstream's 429 pause included).

Each action is logged in the store's audit log (:func:`audit`) with who (``user@host``, or
``who=``) and when.
"""

from __future__ import annotations

import getpass
import json
import math
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resilience.admin._status import breaker_spec, limiter_limit, registry
from resilience.stores.base import RegistryEntry

__all__ = [
    "AuditEntry",
    "audit",
    "breaker_close",
    "breaker_open",
    "pause",
    "reset",
    "resume",
    "who_am_i",
]


@dataclass(frozen=True)
class AuditEntry:
    """One logged operator action: when (``time.time()``), who, what, on which name and key
    (``None``: every key), for how long (seconds, or ``None``), and what it touched."""

    at: float
    who: str
    action: str
    name: str
    key: str | None
    seconds: float | None
    touched: int


def who_am_i() -> str:
    """``user@host`` of this process (what the audit log records by default)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _us(seconds: float, param: str) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{param} must be a number of seconds, got {type(seconds).__name__}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{param} must be a positive number of seconds, got {seconds!r}")
    return math.ceil(seconds * 1e6)


async def _find(store: Any, kinds: Sequence[str], name: str) -> list[RegistryEntry]:
    found = [e for e in await registry(store) if e.kind in kinds and e.name == name]
    if not found:
        raise LookupError(
            f"no {' or '.join(kinds)} named {name!r} in the registry of "
            f"{getattr(store, 'label', store)} (run 'resilience status' to list them)"
        )
    return found


def _keys(entry: RegistryEntry, key: str | None) -> tuple[str, ...]:
    return entry.keys if key is None else (key,)


async def _log(
    store: Any,
    action: str,
    name: str,
    key: str | None,
    seconds: float | None,
    touched: int,
    who: str | None,
) -> AuditEntry:
    entry = AuditEntry(time.time(), who or who_am_i(), action, name, key, seconds, touched)
    await store.registry_audit(json.dumps(entry.__dict__, sort_keys=True))
    return entry


async def breaker_open(
    store: Any,
    name: str,
    key: str | None = None,
    for_: float | None = None,
    *,
    who: str | None = None,
) -> AuditEntry:
    """Open breaker ``name`` for ``key`` (default: every key it has used) for ``for_``
    seconds (default: its break duration). Every process refuses at once (pushed), and at the
    latest within its ``state_refresh``."""
    (entry,) = await _find(store, ("breaker",), name)
    spec = breaker_spec(entry)
    duration = spec.break_us if for_ is None else _us(for_, "for_")
    keys = _keys(entry, key)
    for k in keys:
        await store.breaker_admin(spec, k, "open", duration)
    return await _log(store, "breaker open", name, key, duration / 1e6, len(keys), who)


async def breaker_close(
    store: Any, name: str, key: str | None = None, *, who: str | None = None
) -> AuditEntry:
    """Close breaker ``name`` for ``key`` (default: every key): failures and probes cleared."""
    (entry,) = await _find(store, ("breaker",), name)
    spec = breaker_spec(entry)
    keys = _keys(entry, key)
    for k in keys:
        await store.breaker_admin(spec, k, "close", 0)
    return await _log(store, "breaker close", name, key, None, len(keys), who)


async def pause(
    store: Any, name: str, key: str | None = None, *, for_: float, who: str | None = None
) -> AuditEntry:
    """Pause limiter ``name`` for ``for_`` seconds: one ``key``, or (default) the whole name:
    every key, including keys first used during the pause (see the module docs)."""
    duration = _us(for_, "for_")
    (entry,) = await _find(store, ("limiter",), name)
    limits = (limiter_limit(entry),)
    if key is None:
        await store.registry_hold(name, duration)
    keys = _keys(entry, key)
    for k in keys:
        await store.window_penalize(limits, k, duration)
    return await _log(store, "pause", name, key, duration / 1e6, len(keys), who)


async def resume(
    store: Any, name: str, key: str | None = None, *, who: str | None = None
) -> AuditEntry:
    """Lift the pauses of limiter ``name``: of one ``key``, or (default) the hold of the
    name and the pauses of every key."""
    (entry,) = await _find(store, ("limiter",), name)
    limits = (limiter_limit(entry),)
    if key is None:
        await store.registry_hold(name, 0)
    keys = _keys(entry, key)
    for k in keys:
        await store.registry_clear(limits, k, log=False)
    return await _log(store, "resume", name, key, None, len(keys), who)


async def reset(
    store: Any, name: str, key: str | None = None, *, who: str | None = None
) -> AuditEntry:
    """Forget the state of ``name`` for ``key`` (default: every key): a breaker's failures,
    probes and trip count (closed); a limiter's log and pauses (its hold too, for the whole
    name). A retry budget is not reset (its counts leave with its window)."""
    touched = 0
    for entry in await _find(store, ("breaker", "limiter"), name):
        keys = _keys(entry, key)
        if entry.kind == "breaker":
            spec = breaker_spec(entry)
            for k in keys:
                await store.breaker_admin(spec, k, "reset", 0)
        else:
            if key is None:
                await store.registry_hold(name, 0)
            for k in keys:
                await store.registry_clear((limiter_limit(entry),), k, log=True)
        touched += len(keys)
    return await _log(store, "reset", name, key, None, touched, who)


async def audit(store: Any, count: int = 20) -> tuple[AuditEntry, ...]:
    """The newest ``count`` operator actions logged in ``store``, newest first."""
    out = []
    for text in await store.registry_audit_read(count):
        try:
            d = json.loads(text)
            out.append(
                AuditEntry(
                    float(d["at"]),
                    str(d["who"]),
                    str(d["action"]),
                    str(d["name"]),
                    d.get("key"),
                    d.get("seconds"),
                    int(d.get("touched", 0)),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue  # written by hand or by another version
    return tuple(out)
