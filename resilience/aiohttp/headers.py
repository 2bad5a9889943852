"""Deprecated: the wait-hint parsers moved to :mod:`resilience.http` (no client in it); import
them from there or from :mod:`resilience.aiohttp`. Kept so that imports written against 0.1
keep working."""

from __future__ import annotations

import warnings

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

warnings.warn(
    "resilience.aiohttp.headers is deprecated: import from resilience.http",
    DeprecationWarning,
    stacklevel=2,
)
