"""Keeping a breaker's promises when its caller is cancelled.

A caller cancelled at any point keeps every promise made for it: a store operation it had
started (acquiring, recording an outcome, an operator's action) completes in the background
and its reply is processed as the caller would have (learned, its transition reported, a
probe permit it granted returned); a probe cancelled while it runs returns its permit at
once. Only remote stores need this: a :class:`resilience.MemoryStore` decides without
suspending, so no reply of it can be lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from typing import Any

from resilience import telemetry
from resilience.errors import ResilienceError
from resilience.pipeline import CallContext
from resilience.policies.breaker._report import Reporter, open_ctx
from resilience.policies.breaker._tasks import Background
from resilience.policies.breaker._view import Permit, View
from resilience.stores.base import BreakerReply, BreakerSpec, Store

__all__ = ["Promises"]

logger = logging.getLogger("resilience")


class Promises:
    """Shielded store operations and returned probe permits, for one breaker."""

    __slots__ = ("background", "fallback_stats", "name", "report", "spec", "store", "view")

    def __init__(
        self,
        spec: BreakerSpec,
        store: Store,
        fallback_stats: Any,
        view: View,
        report: Reporter,
        background: Background,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.store = store
        # Decisions the fallback took instead of the shared store (to tell its replies apart).
        self.fallback_stats = fallback_stats
        self.view = view
        self.report = report
        self.background = background

    def _fallbacks(self) -> int:
        stats = self.fallback_stats
        return stats.total() if stats is not None else 0

    async def shielded(
        self,
        key: str,
        op: Coroutine[Any, Any, BreakerReply],
        ctx: CallContext | None,
    ) -> tuple[BreakerReply, bool]:
        """Await a store operation that a cancellation must not lose; its reply, and whether
        the fallback took the decision (as far as this process can tell).

        The operation runs in a task of its own. If the caller is cancelled meanwhile, the
        cancellation propagates at once and the operation completes in the background, where
        its reply is processed as the caller would have: learned, its transition reported, a
        probe it granted returned.
        """
        before = self._fallbacks()
        fut = asyncio.ensure_future(op)
        try:
            reply = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(functools.partial(self._orphan, key, ctx, before))
            raise
        return reply, self._fallbacks() != before

    def _orphan(
        self, key: str, ctx: CallContext | None, before: int, fut: asyncio.Future[BreakerReply]
    ) -> None:
        """The reply of a store operation whose caller was cancelled (see :meth:`shielded`)."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            logger.warning(
                "circuit breaker %r: a cancelled call's store operation failed: %s", self.name, exc
            )
            return
        reply = fut.result()
        self.view.learn(key, reply, self._fallbacks() != before)
        if reply.old and reply.old != reply.state:
            self.report.announce(key, reply, open_ctx(ctx))
        if reply.token:
            self.give_back(key, Permit(reply.gen, reply.token))

    def give_back(self, key: str, permit: Permit) -> None:
        """Return a probe permit in the background (its caller is gone)."""
        self.background.keep(
            asyncio.ensure_future(
                self.store.breaker_record(self.spec, key, "ignore", permit.gen, permit.token, 0)
            ),
            "could not return a probe permit",
        )

    async def release(self, key: str, permit: Permit, ctx: CallContext | None) -> None:
        """A cancelled (or interrupted) probe returns its permit at once, shielded; the call
        is neither a failure nor a success."""
        telemetry.breaker_call(ctx, breaker=self.name, outcome="ignored")
        if not permit.token:
            return
        try:
            await asyncio.shield(
                self.store.breaker_record(self.spec, key, "ignore", permit.gen, permit.token, 0)
            )
        except asyncio.CancelledError:
            pass
        except ResilienceError:
            logger.warning("circuit breaker %r: could not return a probe permit", self.name)
