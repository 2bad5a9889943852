"""Helpers for *your* test suite: test mode, a fake clock, a fakeredis-backed store.

Code under test that uses :class:`resilience.Retry` should not sleep through real backoff, and
code that uses a :class:`resilience.RedisStore` should be testable without a server::

    from resilience import testing

    @pytest.fixture(autouse=True)
    def _no_backoff():
        with testing.testing_mode(attempts=3):
            yield

This module is not imported by ``import resilience`` (``fakeredis`` is an optional extra:
``pip install 'resilience[fakeredis]'``); import it as ``resilience.testing``. Writing a store
of your own? :mod:`resilience.testing.conformance` checks it against the store contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from resilience.policies.retry._retry import TESTING

if TYPE_CHECKING:
    from resilience.stores.redis import RedisStore

__all__ = ["FakeClock", "fake_redis_store", "is_testing", "set_testing", "testing_mode"]


def set_testing(testing: bool, *, attempts: int = 1) -> None:
    """Switch test mode on or off, process-wide (in the spirit of ``stamina.set_testing``).

    In test mode every :class:`resilience.Retry` skips its backoff sleeps (delays, hints and
    deadlines are still computed and checked as usual; only the ``asyncio.sleep`` is skipped)
    and makes at most ``attempts`` attempts per call (``min(retry.attempts, attempts)``;
    the default ``1`` means "no retries"). Rate limiters and breakers are unaffected: use a
    :class:`FakeClock` for those.

    Raises:
        TypeError, ValueError: ``attempts`` is not an int ``>= 1``.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"attempts must be an int, got {type(attempts).__name__}")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    TESTING.active = bool(testing)
    TESTING.attempts = attempts


def is_testing() -> bool:
    """Whether test mode is on."""
    return TESTING.active


@contextmanager
def testing_mode(*, attempts: int = 1) -> Iterator[None]:  # noqa: PT028 - not a test
    """Test mode (see :func:`set_testing`) for the duration of a ``with`` block; the previous
    setting is restored on exit."""
    before = (TESTING.active, TESTING.attempts)
    set_testing(True, attempts=attempts)
    try:
        yield
    finally:
        TESTING.active, TESTING.attempts = before


class FakeClock:
    """A monotonic clock you move by hand: pass it as ``MemoryStore(clock=FakeClock())``.

    Calling it returns the current fake time in seconds; :meth:`advance` moves it forward.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise TypeError(f"start must be a number of seconds, got {type(start).__name__}")
        if not math.isfinite(start):
            raise ValueError(f"start must be finite, got {start!r}")
        self._now = float(start)

    def __call__(self) -> float:
        """The current fake time (seconds)."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (``>= 0``); returns the new time."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                f"seconds must be a finite number >= 0 (clocks are monotonic), got {seconds!r}"
            )
        self._now += seconds
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"


def fake_redis_store(**kwargs: Any) -> RedisStore:
    """A :class:`resilience.RedisStore` over an in-process ``fakeredis.FakeAsyncRedis``.

    It runs the same Lua scripts as a real server (fakeredis's Lua support, via ``lupa``),
    so code using a Redis store can be tested without one. Keyword arguments ``prefix`` and
    ``max_concurrency`` go to the store; the others to ``FakeAsyncRedis`` (e.g. ``server=``
    to share one fake server between several stores, like processes sharing a Redis).

    Raises:
        ImportError: ``fakeredis`` (with Lua support) is not installed; the message says how
            to install it.
    """
    try:
        import fakeredis
        import lupa  # noqa: F401 - fakeredis needs it for EVAL
    except ImportError as exc:
        raise ImportError(
            "resilience.testing.fake_redis_store needs fakeredis with Lua support: "
            "pip install 'resilience[fakeredis]'"
        ) from exc
    from resilience.stores.redis import RedisStore

    store_kw = {k: kwargs.pop(k) for k in ("prefix", "max_concurrency") if k in kwargs}
    return RedisStore(fakeredis.FakeAsyncRedis(**kwargs), **store_kw)
