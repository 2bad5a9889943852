"""Server-provided wait hints: moved to :mod:`resilience.http` (no client in it).

This module re-exports the same names so existing imports keep working; new code imports them
from :mod:`resilience.http` (or :mod:`resilience.aiohttp`).
"""

from __future__ import annotations

from resilience.http import (
    DEFAULT_MAX_RETRY_AFTER,
    HintSource,
    parse_http_date,
    parse_ratelimit,
    parse_retry_after,
    retry_after_hint,
    wait_hint,
)

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "HintSource",
    "parse_http_date",
    "parse_ratelimit",
    "parse_retry_after",
    "retry_after_hint",
    "wait_hint",
]
