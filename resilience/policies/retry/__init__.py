"""Retries with jittered backoff, a deadline, retry hints and a fleet-wide retry budget."""

from resilience.policies.retry._budget import RetryBudget
from resilience.policies.retry._predicates import default_retryable
from resilience.policies.retry._retry import Retry

__all__ = ["Retry", "RetryBudget", "default_retryable"]
