"""Stores: the seam between policies and the state they share.

The public surface of the stores is what this module re-exports: the protocol
(:mod:`resilience.stores.base`, the contract a store implements, errors and tokens included),
the stores the library ships (:class:`MemoryStore`, :class:`RedisStore`, and
:class:`FallbackStore`, which the policies wrap around a shared store), the availability
events a store reports (:class:`StoreEvents`, :class:`StoreObservers`) and the text rule of
names and keys (:func:`check_text`). Every other module here is private (a leading
underscore). ``docs/stores.md`` ("Writing a store") shows how to implement and test your own.
"""

from __future__ import annotations

from resilience.stores._events import StoreEvents, StoreObservers
from resilience.stores._fallback import (
    FALLBACK_MODES,
    FallbackMode,
    FallbackStore,
    check_fallback,
    fair_share,
    with_fallback,
)
from resilience.stores._text import check_text
from resilience.stores.base import (
    MAX_AUDIT_ENTRIES,
    MAX_REGISTRY_KEYS,
    MAX_TOKEN_LENGTH,
    MAX_WEIGHT,
    BreakerAction,
    BreakerEventCallback,
    BreakerOps,
    BreakerOutcomeName,
    BreakerReply,
    BreakerSpec,
    BreakerStateName,
    BudgetOps,
    BudgetResult,
    ConcurrencyEventCallback,
    ConcurrencyOps,
    ConcurrencyReply,
    ConcurrencySpec,
    Presence,
    PresenceOps,
    RegistryEntry,
    RegistryEventCallback,
    RegistryKind,
    RegistryOps,
    Store,
    WindowEvents,
    WindowLimit,
    WindowOps,
    WindowResult,
)
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore

__all__ = [
    "FALLBACK_MODES",
    "MAX_AUDIT_ENTRIES",
    "MAX_REGISTRY_KEYS",
    "MAX_TOKEN_LENGTH",
    "MAX_WEIGHT",
    "BreakerAction",
    "BreakerEventCallback",
    "BreakerOps",
    "BreakerOutcomeName",
    "BreakerReply",
    "BreakerSpec",
    "BreakerStateName",
    "BudgetOps",
    "BudgetResult",
    "ConcurrencyEventCallback",
    "ConcurrencyOps",
    "ConcurrencyReply",
    "ConcurrencySpec",
    "FallbackMode",
    "FallbackStore",
    "MemoryStore",
    "Presence",
    "PresenceOps",
    "RedisStore",
    "RegistryEntry",
    "RegistryEventCallback",
    "RegistryKind",
    "RegistryOps",
    "Store",
    "StoreEvents",
    "StoreObservers",
    "WindowLimit",
    "WindowEvents",
    "WindowOps",
    "WindowResult",
    "check_fallback",
    "check_text",
    "fair_share",
    "with_fallback",
]
