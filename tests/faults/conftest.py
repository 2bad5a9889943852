"""Fixtures of the fault tests: capture the ``resilience`` logger for degraded-mode lines."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _resilience_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the ``resilience`` logger at DEBUG (tests read the degraded-mode lines)."""
    caplog.set_level(logging.DEBUG, logger="resilience")
