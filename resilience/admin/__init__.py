"""Operator tools: see and steer what a fleet shares through its store.

The same operations as the ``resilience`` command (``docs/operations.md``), as async
functions for dashboards and runbooks::

    from resilience import RedisStore, admin

    store = RedisStore.from_url("redis://redis:6379/0")
    st = await admin.status(store)            # typed dataclasses
    for lim in st.limiters:
        print(lim.name, [(k.key, k.used, k.limit) for k in lim.keys])
    await admin.breaker_open(store, "payments", for_=60)
    await admin.pause(store, "openai", for_=30)   # every key, new ones too
    await admin.resume(store, "openai")

What exists is read from the store's registry (:class:`resilience.stores.RegistryOps`),
which the policies write themselves; each action takes effect fleet-wide at once and is
logged in the store (:func:`audit`) with who and when.
"""

from __future__ import annotations

from resilience.admin._actions import (
    AuditEntry,
    audit,
    breaker_close,
    breaker_open,
    pause,
    reset,
    resume,
    who_am_i,
)
from resilience.admin._status import (
    BreakerKeyStatus,
    BreakerStatus,
    BudgetStatus,
    ConcurrencyStatus,
    LimiterKeyStatus,
    LimiterStatus,
    ProcessStatus,
    Status,
    status,
)

__all__ = [
    "AuditEntry",
    "BreakerKeyStatus",
    "BreakerStatus",
    "BudgetStatus",
    "ConcurrencyStatus",
    "LimiterKeyStatus",
    "LimiterStatus",
    "ProcessStatus",
    "Status",
    "audit",
    "breaker_close",
    "breaker_open",
    "pause",
    "reset",
    "resume",
    "status",
    "who_am_i",
]
