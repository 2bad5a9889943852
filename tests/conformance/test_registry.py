"""Registry conformance over every store (``resilience.testing.conformance``)."""

from __future__ import annotations

from resilience.testing.conformance import RegistryConformance


class TestRegistry(RegistryConformance):
    """Runs with the ``store`` fixture of ``tests/conftest.py``."""
