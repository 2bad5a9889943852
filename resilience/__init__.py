"""resilience: asyncio resilience for fleets of workers calling rate-limited APIs.

The public surface is re-exported here; everything else is private.
"""

from resilience.errors import (
    CircuitOpen,
    RateLimited,
    ResilienceError,
    Retryable,
    StoreUnavailable,
)
from resilience.pipeline import CallContext, Pipeline, Policy
from resilience.policies.ratelimit import Decision, SlidingWindowLimiter, all_of
from resilience.stores import MemoryStore, RedisStore, Store

__version__ = "0.1.0"

__all__ = [
    "CallContext",
    "CircuitOpen",
    "Decision",
    "MemoryStore",
    "Pipeline",
    "Policy",
    "RateLimited",
    "RedisStore",
    "ResilienceError",
    "Retryable",
    "SlidingWindowLimiter",
    "Store",
    "StoreUnavailable",
    "__version__",
    "all_of",
]
