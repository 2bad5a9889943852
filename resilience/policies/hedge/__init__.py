"""Hedging: race a slow call against extra attempts; the first success wins."""

from resilience.policies.hedge._hedge import Hedge

__all__ = ["Hedge"]
