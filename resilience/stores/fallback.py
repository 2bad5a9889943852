"""Deprecated location, kept importable until the policies import from :mod:`resilience.stores`
(the fallback store lives in ``resilience/stores/_fallback.py``)."""

from __future__ import annotations

from resilience.stores._fallback import (
    FALLBACK_MODES,
    FallbackMode,
    FallbackStore,
    check_fallback,
    fair_share,
    with_fallback,
)

__all__ = [
    "FALLBACK_MODES",
    "FallbackMode",
    "FallbackStore",
    "check_fallback",
    "fair_share",
    "with_fallback",
]
