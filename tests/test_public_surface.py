"""The public surface, pinned: what ``resilience`` and each public package re-export.

A name added or removed here is an API change: update this list on purpose (and the docs).
Every public class and function has a docstring.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

SURFACE: dict[str, set[str]] = {
    "resilience": {
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
    },
    "resilience.http": {
        "BILLING_ERRORS",
        "Classification",
        "DEFAULT_MAX_RETRY_AFTER",
        "Fault",
        "HeadersLike",
        "HintSource",
        "IDEMPOTENCY_HEADER",
        "IDEMPOTENT_METHODS",
        "NOT_PROCESSED_STATUSES",
        "Outcome",
        "Quota",
        "RETRYABLE_ERROR_TYPES",
        "RETRYABLE_STATUSES",
        "RateLimitState",
        "TransportKind",
        "WaitHint",
        "classify",
        "client_retries",
        "is_idempotent",
        "is_retryable_status",
        "outcome_of",
        "parse_http_date",
        "parse_ratelimit",
        "parse_retry_after",
        "rate_limit_state",
        "retry_after_hint",
        "transport_kind",
        "wait_hint",
    },
    "resilience.aiohttp": {
        "DEFAULT_MAX_RETRY_AFTER",
        "HTTPStatusError",
        "HintSource",
        "IDEMPOTENCY_HEADER",
        "IDEMPOTENT_METHODS",
        "RETRYABLE_STATUSES",
        "ResilienceMiddleware",
        "RetryableHTTPStatus",
        "is_idempotent",
        "is_retryable",
        "is_retryable_status",
        "parse_http_date",
        "parse_ratelimit",
        "parse_retry_after",
        "raise_for_status",
        "redact_url",
        "retry_after_hint",
        "retry_on",
        "wait_hint",
    },
    "resilience.httpx": {"HTTPFailure", "RaiseFor", "ResilientTransport", "RetryableHTTPFailure"},
    "resilience.httpx2": {"HTTPFailure", "RaiseFor", "ResilientTransport", "RetryableHTTPFailure"},
    "resilience.testing": {
        "FakeClock",
        "fake_redis_store",
        "is_testing",
        "set_testing",
        "testing_mode",
    },
    "resilience.backoff": {
        "BackoffStrategy",
        "Constant",
        "Exponential",
        "Jitter",
        "constant",
        "exponential",
    },
    "resilience.errors": {
        "CircuitOpen",
        "ConcurrencyLimited",
        "RateLimited",
        "ResilienceError",
        "Retryable",
        "StoreError",
        "StoreUnavailable",
        "library_error",
    },
    "resilience.pipeline": {
        "CallContext",
        "KeySpec",
        "Pipeline",
        "Policy",
        "PolicyBase",
        "resolve_key",
    },
    "resilience.admin": {
        "AuditEntry",
        "BreakerKeyStatus",
        "BreakerStatus",
        "BudgetStatus",
        "ConcurrencyStatus",
        "LimiterKeyStatus",
        "LimiterStatus",
        "ProcessStatus",
        "Status",
        "audit",
        "breaker_close",
        "breaker_open",
        "pause",
        "reset",
        "resume",
        "status",
        "who_am_i",
    },
    "resilience.policies.retry": {"Retry", "RetryBudget", "default_retryable"},
    "resilience.policies.fallback": {"Fallback", "default_trigger"},
    "resilience.policies.hedge": {"Hedge"},
    "resilience.policies.concurrency": {"ConcurrencyLimit", "DEFAULT_LEASE", "Permit"},
    "resilience.policies.ratelimit": {
        "AllOf",
        "DEFAULT_GUARD",
        "Decision",
        "MAX_LIMIT",
        "SlidingWindowLimiter",
        "all_of",
    },
    "resilience.policies.breaker": {
        "BreakerState",
        "CircuitBreaker",
        "DEFAULT_STATE_REFRESH",
        "MIN_DURATION",
        "PyBreakerPolicy",
        "StateChange",
        "StateListener",
        "pybreaker_policy",
    },
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_the_public_surface_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == SURFACE[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is listed but missing"


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_every_public_class_and_function_has_a_docstring(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [
        name
        for name in mod.__all__
        if (inspect.isclass(obj := getattr(mod, name)) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "") not in ("typing", "collections.abc")  # an alias
        and not (obj.__doc__ or "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("resilience.aiohttp.headers", "resilience.http"),
        ("resilience.stores.fallback", "resilience.stores"),
        ("resilience.stores.keys", "resilience.stores"),
    ],
)
def test_moved_modules_still_import_and_say_where_to(old: str, new: str) -> None:
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"import from {new}"):
        mod = importlib.import_module(old)
    for name in mod.__all__:
        assert hasattr(mod, name)
