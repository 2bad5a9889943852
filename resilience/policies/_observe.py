"""Store availability events to telemetry: the one hook the policies install on their stores.

A store imports no telemetry: it reports entering and leaving degraded mode, and the decisions
a fallback took in its place, to the observers registered on ``store.observers``
(:class:`resilience.stores.StoreObservers`). Every policy passes its store through
:func:`observe_store` (in ``check_store``), which registers :data:`TELEMETRY` there once: the
events then become the ``resilience.store.degraded`` gauge and span event, and the
``resilience.store.fallback.decisions`` counter (:func:`resilience.telemetry.store_degraded`,
:func:`resilience.telemetry.store_fallback`).
"""

from __future__ import annotations

from resilience import telemetry
from resilience.stores import StoreEvents, StoreObservers

__all__ = ["TELEMETRY", "TelemetryEvents", "observe_store"]


class TelemetryEvents(StoreEvents):
    """Forwards a store's availability events to :mod:`resilience.telemetry`."""

    def on_fallback(self, store_label: str, operation: str, mode: str) -> None:
        telemetry.store_fallback(store=store_label, operation=operation, mode=mode)

    def on_degraded(self, store_label: str, degraded: bool, reason: str) -> None:
        telemetry.store_degraded(store=store_label, degraded=degraded, reason=reason)

    def __repr__(self) -> str:
        return "TelemetryEvents()"


#: The one observer the policies register on every store they use.
TELEMETRY = TelemetryEvents()


def observe_store(store: object) -> None:
    """Report ``store``'s availability events to telemetry (once per store; a store without
    ``observers`` reports nothing)."""
    observers = getattr(store, "observers", None)
    if isinstance(observers, StoreObservers):
        observers.add(TELEMETRY)
