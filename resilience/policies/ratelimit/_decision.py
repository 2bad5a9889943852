"""What one limiter decision is made of: :class:`Decision`, cost specs, and the awaiting helpers
that keep a decision's promises under cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from resilience._context import CallContext
from resilience.policies._validate import positive_int
from resilience.stores.base import WindowLimit

__all__ = ["CostSpec", "Decision", "LocalAdmit"]

T = TypeVar("T")

#: "Wait as long as it takes" for a store: 10**15 us is ~31 years, exact in a Lua double.
FOREVER_US = 10**15

CostSpec = int | Callable[..., int]


class Decision(NamedTuple):
    """The outcome of one limiter decision.

    Attributes:
        allowed: the request was admitted.
        remaining: units still free in the tightest quota right after this decision.
        retry_after: seconds until this request could be admitted; ``0.0`` when allowed.
    """

    allowed: bool
    remaining: int
    retry_after: float


# tuple.__new__ bound to Decision: a C call, cheaper than the NamedTuple's Python __new__ (and
# than its _make, a Python classmethod on 3.11).
_decision = functools.partial(tuple.__new__, Decision)

#: A store's synchronous "admit now, or do nothing" (``MemoryStore.window_admit``): see
#: :func:`resilience.policies._validate.local_shortcut`.
LocalAdmit = Callable[[Sequence[WindowLimit], str, Sequence[int], bool], bool | None]


def _static(specs: tuple[CostSpec, ...]) -> tuple[int, ...] | None:
    """The per-call costs when none depends on the call's arguments, else ``None``."""
    if all(isinstance(c, int) for c in specs):
        return specs  # type: ignore[return-value]
    return None


def _call_costs(
    specs: Sequence[CostSpec], limits: Sequence[WindowLimit], ctx: CallContext
) -> tuple[int, ...]:
    """Per-limit costs of a protected call, from each limiter's ``cost`` option."""
    costs = []
    for spec, lim in zip(specs, limits, strict=True):
        c = spec if isinstance(spec, int) else spec(*ctx.args, **ctx.kwargs)
        if c is not spec:
            positive_int("cost", c)
            if c > lim.limit:
                raise ValueError(f"cost must be <= limit ({lim.limit}), got {c}")
        costs.append(c)
    return tuple(costs)


def _check_cost_spec(cost: object) -> CostSpec:
    if callable(cost):
        return cost
    return positive_int("cost", cost)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _finish(aw: Awaitable[T]) -> T:
    """Await ``aw``; if the caller is cancelled meanwhile, ``aw`` still runs to completion
    (the caller waits for it once more, then ``CancelledError`` propagates; a second
    cancellation stops the waiting, not ``aw``)."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_retrieve)
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
        raise
