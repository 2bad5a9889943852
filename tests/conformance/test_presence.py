"""Presence conformance over every store (``resilience.testing.conformance``)."""

from __future__ import annotations

from resilience.testing.conformance import PresenceConformance


class TestPresence(PresenceConformance):
    """Runs with the ``store`` fixture of ``tests/conftest.py``."""
