"""The fleet-wide concurrency limit (a bulkhead shared by every process of a store)."""

from resilience.policies.concurrency._limit import DEFAULT_LEASE, ConcurrencyLimit, Permit

__all__ = ["DEFAULT_LEASE", "ConcurrencyLimit", "Permit"]
