"""Breaker decisions of the Redis store (placeholder until the breaker lands)."""

from __future__ import annotations

from resilience.stores.redis.core import RedisCore

__all__ = ["RedisBreaker"]


class RedisBreaker(RedisCore):
    """Breaker state in Redis."""
