"""resilience: asyncio resilience for fleets of workers calling rate-limited APIs.

The public surface is re-exported here; everything else is private.
"""

import importlib.metadata as _metadata
import re as _re
from pathlib import Path as _Path

from resilience import backoff
from resilience.errors import (
    CircuitOpen,
    ConcurrencyLimited,
    RateLimited,
    ResilienceError,
    Retryable,
    StoreError,
    StoreUnavailable,
)
from resilience.pipeline import CallContext, Pipeline, Policy
from resilience.policies.breaker import (
    CircuitBreaker,
    PyBreakerPolicy,
    StateChange,
    pybreaker_policy,
)
from resilience.policies.concurrency import ConcurrencyLimit
from resilience.policies.fallback import Fallback
from resilience.policies.hedge import Hedge
from resilience.policies.ratelimit import Decision, SlidingWindowLimiter, all_of
from resilience.policies.retry import Retry, RetryBudget
from resilience.stores import FallbackStore, MemoryStore, RedisStore, Store
from resilience.telemetry import configure as configure_telemetry


def _package_version() -> str:
    """The version of the ``resilience`` distribution: ``pyproject.toml`` is its one source.

    Read from the installed package's metadata; in a source tree that is not installed, from
    the ``pyproject.toml`` beside the package; ``"0+unknown"`` when neither is found.
    """
    try:
        return _metadata.version("resilience")
    except _metadata.PackageNotFoundError:
        pass
    try:
        text = (_Path(__file__).resolve().parent.parent / "pyproject.toml").read_text("utf-8")
    except OSError:
        return "0+unknown"
    project = _re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, _re.M | _re.S)
    if project is None or not _re.search(r'^name\s*=\s*"resilience"\s*$', project[1], _re.M):
        return "0+unknown"
    version = _re.search(r'^version\s*=\s*"([^"]+)"\s*$', project[1], _re.M)
    return version[1] if version else "0+unknown"


#: The package version (from the distribution's metadata, see :func:`_package_version`).
__version__ = _package_version()

__all__ = [
    "CallContext",
    "CircuitBreaker",
    "CircuitOpen",
    "ConcurrencyLimit",
    "ConcurrencyLimited",
    "Decision",
    "Fallback",
    "FallbackStore",
    "Hedge",
    "MemoryStore",
    "Pipeline",
    "Policy",
    "PyBreakerPolicy",
    "RateLimited",
    "RedisStore",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "Retryable",
    "SlidingWindowLimiter",
    "StateChange",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "__version__",
    "all_of",
    "backoff",
    "configure_telemetry",
    "pybreaker_policy",
]
