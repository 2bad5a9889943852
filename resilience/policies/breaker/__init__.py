"""The circuit breaker (shared through the store) and pybreaker interop."""

from resilience.policies.breaker.breaker import (
    DEFAULT_STATE_REFRESH,
    MIN_DURATION,
    BreakerState,
    CircuitBreaker,
    StateChange,
    StateListener,
)
from resilience.policies.breaker.interop import PyBreakerPolicy, pybreaker_policy

__all__ = [
    "DEFAULT_STATE_REFRESH",
    "MIN_DURATION",
    "BreakerState",
    "CircuitBreaker",
    "PyBreakerPolicy",
    "StateChange",
    "StateListener",
    "pybreaker_policy",
]
