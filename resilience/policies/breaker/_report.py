"""Reporting the transitions this process made: telemetry, the log, then the listeners.

A transition is reported only by the process whose store operation made it (exactly once
fleet-wide). Listeners run in order; one that raises is logged and skipped. From the first
``async`` listener on they run in a task: the caller awaits it (shielded), so a cancelled
caller propagates its cancellation at once while the remaining listeners still run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Sequence

from resilience import telemetry
from resilience.pipeline import CallContext
from resilience.policies._validate import check_callable
from resilience.policies.breaker._options import StateChange, StateListener
from resilience.policies.breaker._tasks import Background
from resilience.stores.base import BreakerReply

__all__ = ["Reporter", "open_ctx"]

logger = logging.getLogger("resilience")


def open_ctx(ctx: CallContext | None) -> CallContext | None:
    """``ctx`` if its call span is still open (or it has none), else ``None``: a transition
    reported after the caller was cancelled still counts, but cannot annotate an ended span."""
    if ctx is None:
        return None
    span = telemetry.call_span(ctx)
    if span is not None and not span.is_recording():
        return None
    return ctx


class Reporter:
    """One breaker's listeners, and the reporting of its transitions."""

    __slots__ = ("background", "listeners", "name")

    def __init__(
        self, name: str, listeners: Sequence[StateListener], background: Background
    ) -> None:
        self.name = name
        self.listeners = list(listeners)
        self.background = background

    def add(self, listener: StateListener) -> None:
        """Add ``listener`` last (``TypeError`` naming ``listener`` unless callable)."""
        self.listeners.append(check_callable("listener", listener))

    async def transition(self, key: str, reply: BreakerReply, ctx: CallContext | None) -> None:
        """Report the transition ``reply`` made, if any; the listeners run before this returns.

        If the caller is cancelled while an ``async`` listener runs, the cancellation
        propagates at once and the remaining listeners still run, in the background.
        """
        if not reply.old or reply.old == reply.state:
            return
        rest = self.announce(key, reply, ctx)
        if rest is not None:
            await asyncio.shield(rest)

    def announce(
        self, key: str, reply: BreakerReply, ctx: CallContext | None
    ) -> asyncio.Task[None] | None:
        """Report a transition this process made: telemetry, log, then each listener in order.

        Returns the task running the listeners from the first ``async`` one on (``None`` when
        every listener has run already).
        """
        name = self.name
        change = StateChange(name, key, reply.old, reply.state)  # type: ignore[arg-type]
        telemetry.breaker_state_change(ctx, breaker=name, old=reply.old, new=reply.state)
        logger.info(
            "circuit breaker %r%s: %s -> %s",
            name,
            f" [{key}]" if key else "",
            reply.old,
            reply.state,
            extra={"breaker": name, "key": key, "old": reply.old, "new": reply.state},
        )
        listeners = tuple(self.listeners)
        for i, fn in enumerate(listeners):
            try:
                r = fn(change)
            except Exception:
                logger.exception("circuit breaker %r: listener %r failed", name, fn)
                continue
            if inspect.isawaitable(r):
                task = asyncio.ensure_future(self._notify(change, fn, r, listeners[i + 1 :]))
                self.background.keep(task)
                return task
        return None

    async def _notify(
        self,
        change: StateChange,
        fn: StateListener,
        pending: Awaitable[object],
        rest: Sequence[StateListener],
    ) -> None:
        try:
            await pending
        except Exception:
            logger.exception("circuit breaker %r: listener %r failed", self.name, fn)
        for fn in rest:
            try:
                r = fn(change)
                if inspect.isawaitable(r):
                    await r
            except Exception:
                logger.exception("circuit breaker %r: listener %r failed", self.name, fn)
