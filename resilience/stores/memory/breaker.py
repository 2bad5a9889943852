"""Breaker decisions of the in-process store (placeholder until the breaker lands)."""

from __future__ import annotations

from resilience.stores.memory.core import MemoryCore

__all__ = ["MemoryBreaker"]


class MemoryBreaker(MemoryCore):
    """Breaker state in process memory."""
