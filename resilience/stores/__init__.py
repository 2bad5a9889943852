"""Stores: the seam between policies and the state they share (see ``base.py``)."""

from __future__ import annotations

from resilience.stores.base import Store
from resilience.stores.memory import MemoryStore
from resilience.stores.redis import RedisStore

__all__ = ["MemoryStore", "RedisStore", "Store"]
