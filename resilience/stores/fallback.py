"""Deprecated: import these names from :mod:`resilience.stores` (``FallbackStore`` also from
:mod:`resilience`). Kept so that imports written against 0.1 keep working."""

from __future__ import annotations

import warnings

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

warnings.warn(
    "resilience.stores.fallback is deprecated: import from resilience.stores",
    DeprecationWarning,
    stacklevel=2,
)
