"""A breaker state no breaker writes (``state=bogus`` put into Redis by hand): read as closed,
and said once per breaker key and store."""

from __future__ import annotations

import logging

__all__ = ["UnknownStates"]

logger = logging.getLogger("resilience")

_WARNED_MAX = 10_000


class UnknownStates:
    """The breaker keys a store already warned about (owned by the store, one per store)."""

    __slots__ = ("_warned",)

    def __init__(self) -> None:
        self._warned: set[tuple[str, str]] = set()

    def warn(self, label: str, name: str, key: str, value: str) -> None:
        """Log, once per ``(name, key)``, that store ``label`` held state ``value`` for
        breaker ``name`` (it is read as closed)."""
        warned = self._warned
        if (name, key) in warned:
            return
        if len(warned) >= _WARNED_MAX:
            warned.clear()
        warned.add((name, key))
        logger.warning(
            "circuit breaker %r%s: unknown state %r in store %s; treated as closed",
            name,
            f" [{key}]" if key else "",
            value,
            label,
            extra={"breaker": name, "key": key, "store": label},
        )
