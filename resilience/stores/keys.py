"""Deprecated location, kept importable until the policies import from :mod:`resilience.stores`.

``check_text`` is :func:`resilience.stores.check_text`; ``breaker_tag`` is the Redis store's
(ask a store: :meth:`resilience.stores.base.BreakerOps.breaker_tag`). The Redis key layout now
lives in ``resilience/stores/redis/_keys.py``.
"""

from __future__ import annotations

from resilience.stores._text import check_text
from resilience.stores.redis._keys import breaker_tag

__all__ = ["breaker_tag", "check_text"]
