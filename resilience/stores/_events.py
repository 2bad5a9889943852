"""What a store reports about its availability, and to whom: the stores' one event hook.

A store is plain I/O behind the protocol: it imports no telemetry. When it enters or leaves
degraded mode, or when a fallback decides in its place, it tells the observers registered on
its :class:`StoreObservers` (``store.observers``). The policies register one observer that
forwards these events to :mod:`resilience.telemetry` (``resilience/policies/_observe.py``);
your code may register its own::

    class Pager(StoreEvents):
        def on_degraded(self, store_label: str, degraded: bool, reason: str) -> None:
            if degraded:
                page(f"{store_label} is down: {reason}")

    store.observers.add(Pager())
"""

from __future__ import annotations

import logging

__all__ = ["StoreEvents", "StoreObservers"]

logger = logging.getLogger("resilience")


class StoreEvents:
    """An observer of a store's availability: subclass it and override what you need.

    Both methods are called synchronously, in the task that noticed (so an observer can attach
    an event to that task's current span), and must be quick and not raise: an exception is
    logged and dropped, it never reaches the decision.
    """

    def on_fallback(self, store_label: str, operation: str, mode: str) -> None:
        """A fallback in ``mode`` (``"local"``, ``"allow"`` or ``"deny"``) took a decision of
        ``operation`` (e.g. ``"window_acquire"``) because the store was unavailable."""

    def on_degraded(self, store_label: str, degraded: bool, reason: str) -> None:
        """The store entered (``degraded=True``; ``reason``: what failed, e.g. ``"timeout"``)
        or left (``degraded=False``, ``reason="recovered"``) degraded mode."""


class StoreObservers:
    """The observers of one store (see :class:`StoreEvents`); the store emits through it.

    A store that wraps another (:class:`resilience.FallbackStore`) shares the other's, so
    an observer registered on either hears about both.
    """

    __slots__ = ("_observers",)

    def __init__(self) -> None:
        self._observers: tuple[StoreEvents, ...] = ()

    def __repr__(self) -> str:
        return f"StoreObservers({list(self._observers)!r})"

    def __len__(self) -> int:
        return len(self._observers)

    def __contains__(self, observer: object) -> bool:
        return any(o is observer for o in self._observers)

    def add(self, observer: StoreEvents) -> None:
        """Register ``observer`` (once: adding it again changes nothing)."""
        if not callable(getattr(observer, "on_fallback", None)) or not callable(
            getattr(observer, "on_degraded", None)
        ):
            raise TypeError(
                "observer must have on_fallback and on_degraded methods (see StoreEvents), "
                f"got {type(observer).__name__}"
            )
        if observer not in self:
            self._observers = (*self._observers, observer)

    def remove(self, observer: StoreEvents) -> None:
        """Unregister ``observer`` (no error if it was not registered)."""
        self._observers = tuple(o for o in self._observers if o is not observer)

    def fallback(self, store_label: str, operation: str, mode: str) -> None:
        """Tell every observer about a fallback decision (see :meth:`StoreEvents.on_fallback`)."""
        for o in self._observers:
            try:
                o.on_fallback(store_label, operation, mode)
            except Exception:
                logger.exception("store observer %r failed", o)

    def degraded(self, store_label: str, degraded: bool, reason: str) -> None:
        """Tell every observer about a change of degraded mode (see
        :meth:`StoreEvents.on_degraded`)."""
        for o in self._observers:
            try:
                o.on_degraded(store_label, degraded, reason)
            except Exception:
                logger.exception("store observer %r failed", o)
