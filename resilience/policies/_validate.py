"""Argument checks shared by every policy: each error names the parameter."""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MAX_SECONDS",
    "check_key",
    "check_name",
    "check_store",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
]


def positive_int(name: str, value: object) -> int:
    """``value`` as a positive int, or ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def positive_seconds(name: str, value: object) -> float:
    """``value`` as a finite number of seconds > 0."""
    v = non_negative_seconds(name, value)
    if v == 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value}")
    return v


#: The longest duration any option accepts (about 3 years). Stores count in integer
#: microseconds on Redis's clock inside Lua doubles: ``now + 1e8 s`` in µs stays far below
#: 2**53, so every duration is exact.
MAX_SECONDS = 1e8


def non_negative_seconds(name: str, value: object) -> float:
    """``value`` as a finite number of seconds in ``[0, MAX_SECONDS]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        v = math.inf
    if not math.isfinite(v) or v < 0 or v > MAX_SECONDS:
        raise ValueError(f"{name} must be a number of seconds in [0, {MAX_SECONDS:g}], got {value}")
    return v


def check_name(name: object, param: str = "name") -> str:
    """A policy name: a non-empty str."""
    if not isinstance(name, str):
        raise TypeError(f"{param} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{param} must not be empty")
    return name


def check_key(key: object) -> None:
    """A policy's ``key`` option: ``None``, a str, or a callable over the call's arguments."""
    if key is not None and not (isinstance(key, str) or callable(key)):
        raise TypeError("key must be a str or a callable over the call's arguments")


def check_store(store: object, operation: str) -> Any:
    """A policy's ``store`` option: the process-wide memory store when ``None``, else an object
    implementing the store protocol (checked by its ``operation`` method)."""
    if store is None:
        from resilience.stores.memory import default_store

        return default_store()
    if not callable(getattr(store, operation, None)):
        raise TypeError(f"store must implement the Store protocol, got {type(store).__name__}")
    return store
