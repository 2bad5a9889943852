"""Fallback: serve a failed call from an alternative (another model, provider, a cache)."""

from resilience.policies._faults import default_trigger
from resilience.policies.fallback._fallback import Fallback

__all__ = ["Fallback", "default_trigger"]
