"""resilience: asyncio resilience for fleets of workers calling rate-limited APIs.

The public surface is re-exported here; everything else is private.
"""

from resilience import backoff
from resilience.errors import (
    CircuitOpen,
    RateLimited,
    ResilienceError,
    Retryable,
    StoreError,
    StoreUnavailable,
)
from resilience.pipeline import CallContext, Pipeline, Policy
from resilience.policies.breaker import (
    CircuitBreaker,
    PyBreakerPolicy,
    StateChange,
    pybreaker_policy,
)
from resilience.policies.ratelimit import Decision, SlidingWindowLimiter, all_of
from resilience.policies.retry import Retry, RetryBudget
from resilience.stores import MemoryStore, RedisStore, Store
from resilience.stores.fallback import FallbackStore
from resilience.telemetry import configure as configure_telemetry

__version__ = "0.1.0"

__all__ = [
    "CallContext",
    "CircuitBreaker",
    "CircuitOpen",
    "Decision",
    "FallbackStore",
    "MemoryStore",
    "Pipeline",
    "Policy",
    "PyBreakerPolicy",
    "RateLimited",
    "RedisStore",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "Retryable",
    "SlidingWindowLimiter",
    "StateChange",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "__version__",
    "all_of",
    "backoff",
    "configure_telemetry",
    "pybreaker_policy",
]
