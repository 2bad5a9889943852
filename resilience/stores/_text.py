"""Names and keys are text: the one input rule every store shares.

Every name and key a policy passes to a store must be *text*: a ``str`` that encodes as UTF-8,
so no lone surrogate (``"\\udcff"``, e.g. from ``os.fsdecode`` of undecodable bytes). Such a
string cannot be sent to Redis at all (its keys are bytes); :func:`check_text` rejects it with a
``ValueError`` naming the parameter, and every policy checks its names and keys with it before
they reach a store (``resilience/policies/_validate.py``), so the same input fails the same way
on every store.
"""

from __future__ import annotations

__all__ = ["check_text", "show"]


def show(value: str) -> str:
    """``repr(value)``, cut to a readable length for an error message."""
    r = repr(value)
    return r if len(r) <= 60 else r[:50] + "..." + r[-5:]


def check_text(value: str, param: str) -> str:
    """``value`` (a ``str``) if it encodes as UTF-8, else ``ValueError`` naming ``param``.

    A lone surrogate (``"\\udcff"``) is the only way a ``str`` can fail.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{param} must be valid Unicode text (encodable as UTF-8), got {show(value)}: "
            f"a lone surrogate at index {exc.start}"
        ) from None
    return value
