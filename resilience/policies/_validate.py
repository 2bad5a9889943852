"""Argument checks shared by every policy: each error names the parameter.

Every check takes the parameter's name (``param``) and starts its message with it
(``"window must be ..."``), so an option is reported the same way whichever policy (or
strategy) takes it: :class:`resilience.CircuitBreaker`, :class:`resilience.SlidingWindowLimiter`,
:class:`resilience.Retry`, :mod:`resilience.backoff`, the pybreaker interop. ``TypeError`` for
a value of the wrong kind (a ``bool`` is never a number), ``ValueError`` for one out of range.

Names and keys end up in store keys (see :func:`resilience.stores.check_text`), so every policy
checks them here, the same way, before any store sees them: a bad one fails with the same
``TypeError``/``ValueError`` on :class:`resilience.MemoryStore` and
:class:`resilience.RedisStore`, at construction when it is configuration (``name``, a fixed
``key``) and at the call that passes it otherwise (a per-call ``key``, or what a key callable
returned).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from resilience.policies._observe import observe_store
from resilience.stores import check_text

__all__ = [
    "MAX_LIMIT",
    "MAX_SECONDS",
    "ExceptionPredicate",
    "at_least",
    "call_key",
    "check_async_callable",
    "check_async_callables",
    "check_callable",
    "check_callables",
    "check_exception_matcher",
    "check_instance",
    "check_key",
    "check_name",
    "check_one_of",
    "check_store",
    "exception_types",
    "finite_number",
    "local_shortcut",
    "min_duration",
    "non_negative_seconds",
    "positive_int",
    "positive_number",
    "positive_seconds",
]

T = TypeVar("T")


#: The largest ``limit`` of a rate limiter, hence also the largest ``cost``: 2**40 (about
#: 1.1 x 10**12 units per window). The Redis store counts in Lua, whose numbers are doubles,
#: exact only up to 2**53; a log holds at most 2**52 units, admitted and reserved (see
#: :meth:`resilience.stores.base.WindowOps.window_acquire`), so a log at the largest limit
#: can still hold 4096 windows' worth of reservations.
MAX_LIMIT = 2**40


def positive_int(param: str, value: object) -> int:
    """``value`` as a positive int, or ``TypeError``/``ValueError`` naming ``param``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{param} must be > 0, got {value}")
    return value


# ---------------------------------------------------------------------- numbers


def finite_number(param: str, value: object) -> float:
    """``value`` (an int or a float, not a bool) as a finite float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"{param} must be finite, got {value!r}")
    return v


def at_least(
    param: str, value: object, minimum: float, *, bound: str | None = None, unit: str = ""
) -> float:
    """``value`` as a finite number ``>= minimum``.

    ``bound`` describes the minimum in the message when it comes from another option (e.g.
    ``"initial (1.0)"``); ``unit`` follows it (``" seconds"``).
    """
    v = finite_number(param, value)
    if v < minimum:
        shown = f"{minimum:g}" if bound is None else bound
        raise ValueError(f"{param} must be >= {shown}{unit}, got {value!r}")
    return v


def positive_number(param: str, value: object, *, unit: str = "") -> float:
    """``value`` as a finite number ``> 0`` (``unit``, e.g. ``" seconds"``, in the message)."""
    v = finite_number(param, value)
    if v <= 0:
        raise ValueError(f"{param} must be > 0{unit}, got {value!r}")
    return v


# ---------------------------------------------------------------------- durations


def positive_seconds(param: str, value: object) -> float:
    """``value`` as a finite number of seconds in ``(0, MAX_SECONDS]``."""
    v = non_negative_seconds(param, value)
    if v == 0:
        raise ValueError(f"{param} must be > 0 seconds, got {value}")
    return v


#: The longest duration any option accepts (about 3 years). Stores count in integer
#: microseconds on Redis's clock inside Lua doubles: ``now + 1e8 s`` in µs stays far below
#: 2**53, so every duration is exact.
MAX_SECONDS = 1e8


def non_negative_seconds(param: str, value: object) -> float:
    """``value`` as a finite number of seconds in ``[0, MAX_SECONDS]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a number of seconds, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        v = math.inf
    if not math.isfinite(v) or v < 0 or v > MAX_SECONDS:
        raise ValueError(
            f"{param} must be a number of seconds in [0, {MAX_SECONDS:g}], got {value}"
        )
    return v


def min_duration(param: str, value: object, minimum: float, reason: str = "") -> float:
    """``value`` as a number of seconds in ``[minimum, MAX_SECONDS]``: for a duration a store
    must represent, where one too small would round to nothing. ``reason`` (why the minimum)
    is added to the message in parentheses."""
    v = positive_seconds(param, value)
    if v < minimum:
        why = f" ({reason})" if reason else ""
        raise ValueError(f"{param} must be at least {minimum:g} seconds{why}, got {value}")
    return v


# ---------------------------------------------------------------------- callables and types

#: What an exception matcher (``failure_on``, ``retry_on``) compiles to: ``True`` = it matches.
ExceptionPredicate = Callable[[BaseException], bool]

_MATCHER = (
    "an exception type, a non-empty tuple of exception types, or a predicate over the exception"
)


def exception_types(param: str, value: object) -> tuple[type[BaseException], ...] | None:
    """The exception types of a ``failure_on``/``retry_on``-style option: an exception type,
    or a non-empty tuple (list, set) of them; ``None`` when ``value`` is a predicate (any other
    callable). ``TypeError`` naming ``param`` otherwise."""
    if isinstance(value, type):
        if not issubclass(value, BaseException):
            raise TypeError(f"{param} must be {_MATCHER}, got the type {value.__name__}")
        return (value,)
    if isinstance(value, tuple | list | set | frozenset):
        types = tuple(value)
        if not types:
            raise TypeError(f"{param} must be {_MATCHER}, got an empty {type(value).__name__}")
        for t in types:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise TypeError(f"{param} must contain exception types only, got {t!r}")
        return types
    if callable(value):
        return None
    raise TypeError(f"{param} must be {_MATCHER}, got {type(value).__name__}")


def check_exception_matcher(param: str, value: object) -> ExceptionPredicate | None:
    """A ``failure_on``/``retry_on``-style option as a predicate over the exception; ``None``
    stays ``None`` (the policy's default). See :func:`exception_types` for what is accepted."""
    if value is None:
        return None
    types = exception_types(param, value)
    if types is None:
        return value  # type: ignore[return-value]  # a predicate (callable, checked above)
    if len(types) == 1:
        exc_type = types[0]
        return lambda e: isinstance(e, exc_type)
    return lambda e: isinstance(e, types)


def check_callable(param: str, value: object, what: str = "callable") -> Any:
    """``value`` if it is callable, else ``TypeError``: ``"<param> must be <what>, got ..."``
    (``what`` e.g. ``"a predicate over the result"``)."""
    if not callable(value):
        raise TypeError(f"{param} must be {what}, got {type(value).__name__}")
    return value


def check_callables(param: str, value: object) -> list[Any]:
    """An iterable of callables (not a str) as a list; each bad item is named
    ``<param>[<index>]``."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"{param} must be an iterable of callables, got {type(value).__name__}")
    return [check_callable(f"{param}[{i}]", fn) for i, fn in enumerate(value)]


def check_async_callable(param: str, value: object) -> Any:
    """``value`` if it is an async callable (an ``async def`` function, a ``functools.partial``
    of one, an object with an ``async def __call__``, a function decorated by a
    :class:`resilience.Pipeline`), else ``TypeError`` naming ``param``."""
    target = value.func if isinstance(value, functools.partial) else value
    if not (
        inspect.iscoroutinefunction(target)
        or inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004
    ):
        raise TypeError(
            f"{param} must be an async callable (async def), got {type(value).__name__}"
        )
    return value


def check_async_callables(param: str, value: object) -> list[Any]:
    """One async callable, or a non-empty list or tuple of them, as a list; a bad item is
    named ``<param>[<index>]``."""
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"{param} must not be empty")
        return [check_async_callable(f"{param}[{i}]", fn) for i, fn in enumerate(value)]
    return [check_async_callable(param, value)]


def check_one_of(param: str, value: object, choices: Sequence[object]) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if value not in choices:
        kinds = ", ".join(map(repr, choices))
        raise ValueError(f"{param} must be one of {kinds}; got {value!r}")
    return value


def check_instance(param: str, value: object, cls: type[T], what: str | None = None) -> T:
    """``value`` if it is an instance of ``cls``, else ``TypeError``: ``"<param> must be a
    <what>, got ..."`` (``what`` defaults to the class's name)."""
    if not isinstance(value, cls):
        raise TypeError(f"{param} must be a {what or cls.__name__}, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- names, keys, stores


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


def local_shortcut(store: object, name: str) -> Any:
    """The store's own synchronous shortcut ``name`` (``window_admit``, ``breaker_admit``), or
    ``None``.

    A store whose decisions are local (:attr:`resilience.stores.Store.decides_locally`) may
    offer, beside the protocol's coroutines, a plain method taking the commonest decision at
    once (see :class:`resilience.MemoryStore`); a policy then skips a coroutine per call. Only
    a method bound to the store itself counts: a wrapper that forwards attributes to another
    store would otherwise hand out its inner store's shortcut, which bypasses the wrapper.
    """
    if not getattr(store, "decides_locally", False):
        return None
    method = getattr(store, name, None)
    if not callable(method) or getattr(method, "__self__", None) is not store:
        return None
    return method


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
