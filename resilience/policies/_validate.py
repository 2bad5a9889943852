"""Argument checks shared by every policy: each error names the parameter.

Names and keys end up in store keys (see :mod:`resilience.stores.keys`), so every policy checks
them here, the same way, before any store sees them: a bad one fails with the same
``TypeError``/``ValueError`` on :class:`resilience.MemoryStore` and
:class:`resilience.RedisStore`, at construction when it is configuration (``name``, a fixed
``key``) and at the call that passes it otherwise (a per-call ``key``, or what a key callable
returned).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from resilience.policies._observe import observe_store
from resilience.stores.keys import check_text

__all__ = [
    "MAX_LIMIT",
    "MAX_SECONDS",
    "call_key",
    "check_key",
    "check_name",
    "check_store",
    "non_negative_seconds",
    "positive_int",
    "positive_seconds",
]


#: The largest ``limit`` of a rate limiter, hence also the largest ``cost``: 2**40 (about
#: 1.1 x 10**12 units per window). The Redis store counts in Lua, whose numbers are doubles,
#: exact only up to 2**53; a log holds at most 2**52 units, admitted and reserved (see
#: :meth:`resilience.stores.base.WindowOps.window_acquire`), so a log at the largest limit
#: can still hold 4096 windows' worth of reservations.
MAX_LIMIT = 2**40


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
    """A policy name: a non-empty str of text (no lone surrogate)."""
    if not isinstance(name, str):
        raise TypeError(f"{param} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{param} must not be empty")
    return check_text(name, param)


KeyOption = str | Callable[..., str] | None


def check_key(key: object, param: str = "key") -> KeyOption:
    """A policy's ``key`` option: ``None`` (one key for every call), a str of text, or a
    callable over the call's arguments returning one (checked per call by :func:`call_key`)."""
    if key is None or callable(key):
        return key
    if not isinstance(key, str):
        raise TypeError(
            f"{param} must be a str, a callable over the call's arguments returning a str, "
            f"or None (one key for every call); got {type(key).__name__}"
        )
    return check_text(key, param)


def call_key(key: object, param: str = "key") -> str:
    """The key of one call: a str of text, or ``None`` for the default key (``""``).

    Anything else is refused, ``0`` and ``b"..."`` included (never silently the default key):
    ``TypeError``/``ValueError`` naming ``param``. Runs on every call: a plain ASCII str
    costs two checks.
    """
    if type(key) is str:
        return key if key.isascii() else check_text(key, param)
    if key is None:
        return ""
    if isinstance(key, str):  # a str subclass
        return check_text(str(key), param)
    raise TypeError(f"{param} must be a str, or None for the default key; got {type(key).__name__}")


def check_store(store: object, operation: str) -> Any:
    """A policy's ``store`` option: the process-wide memory store when ``None``, else an object
    implementing the store protocol (checked by its ``operation`` method)."""
    if store is None:
        from resilience.stores.memory import default_store

        return default_store()
    if not callable(getattr(store, operation, None)):
        raise TypeError(f"store must implement the Store protocol, got {type(store).__name__}")
    observe_store(store)
    return store
