"""Deprecated: ``check_text`` is :func:`resilience.stores.check_text`; ask a store for
``breaker_tag`` (:meth:`resilience.stores.base.BreakerOps.breaker_tag`). Kept so that imports
written against 0.1 keep working."""

from __future__ import annotations

import warnings

from resilience.stores._text import check_text
from resilience.stores.redis._keys import breaker_tag

__all__ = ["breaker_tag", "check_text"]

warnings.warn(
    "resilience.stores.keys is deprecated: import from resilience.stores",
    DeprecationWarning,
    stacklevel=2,
)
