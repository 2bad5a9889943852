"""Sliding-window conformance over every store (``resilience.testing.conformance``)."""

from __future__ import annotations

from resilience.testing.conformance import WindowConformance


class TestWindow(WindowConformance):
    """Runs with the ``store`` fixture of ``tests/conftest.py``."""
