"""Budget decisions of the Redis store (placeholder until the budget lands)."""

from __future__ import annotations

from resilience.stores.redis.core import RedisCore

__all__ = ["RedisBudget"]


class RedisBudget(RedisCore):
    """Budget state in Redis."""
