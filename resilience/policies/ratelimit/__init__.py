"""The distributed sliding-window rate limiter."""

from resilience.policies.ratelimit._all_of import AllOf, all_of
from resilience.policies.ratelimit._limiter import (
    DEFAULT_GUARD,
    MAX_LIMIT,
    Decision,
    SlidingWindowLimiter,
)

__all__ = ["DEFAULT_GUARD", "MAX_LIMIT", "AllOf", "Decision", "SlidingWindowLimiter", "all_of"]
