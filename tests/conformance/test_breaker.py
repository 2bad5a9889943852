"""Circuit-breaker conformance over every store (``resilience.testing.conformance``)."""

from __future__ import annotations

from resilience.testing.conformance import BreakerConformance


class TestBreaker(BreakerConformance):
    """Runs with the ``store`` fixture of ``tests/conftest.py``."""
