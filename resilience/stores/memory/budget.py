"""Budget decisions of the in-process store (placeholder until the budget lands)."""

from __future__ import annotations

from resilience.stores.memory.core import MemoryCore

__all__ = ["MemoryBudget"]


class MemoryBudget(MemoryCore):
    """Budget state in process memory."""
