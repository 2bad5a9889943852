"""Keeping a process's view in step with the shared store.

- **Pushed transitions.** A store that pushes them (:meth:`resilience.stores.base.BreakerOps.
  breaker_subscribe`) is followed from the first round trip in a running event loop: a
  transition made elsewhere ends this process's belief about that key, so its next call asks
  the store. When the subscription is (re)established, every "closed" learned meanwhile is
  forgotten, and the open states this process knows are re-seeded (the store may have
  restarted).
- **Re-seeding.** An open state the store has lost (see :mod:`resilience.policies.breaker.
  _view`) is written back in the background, same generation, same deadline, so the rest of
  the fleet is refused too; retried until the store answers or the deadline passes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable

from resilience.errors import ResilienceError
from resilience.policies.breaker._tasks import Background
from resilience.policies.breaker._view import View
from resilience.stores import FallbackStore
from resilience.stores.base import BreakerSpec, Store

__all__ = ["SyncedView"]

logger = logging.getLogger("resilience")


class SyncedView(View):
    """A :class:`~resilience.policies.breaker._view.View` that follows the store's pushed
    transitions and re-seeds the open states the store has lost."""

    __slots__ = ("__weakref__", "background", "reseeding", "spec", "store", "unsub")

    def __init__(
        self,
        spec: BreakerSpec,
        store: Store,
        state_refresh: float,
        remote: bool,
        background: Background,
    ) -> None:
        super().__init__(spec.name, state_refresh, remote)
        self.spec = spec
        self.store = store
        self.background = background
        self.unsub: Callable[[], None] | None = None
        self.reseeding: set[str] = set()

    # ------------------------------------------------------------------ pushed transitions

    def _tag(self, key: str) -> str | None:
        tag = getattr(self.store, "breaker_tag", None)
        return None if tag is None else str(tag(self.name, key))

    def _follow(self) -> None:
        """Follow the store's pushed transitions on the running loop (once per loop)."""
        if self.unsub is not None:
            self.unsub()  # a subscription of a previous event loop
            self.unsub = None
        self.events_loop = asyncio.get_running_loop()
        subscribe = getattr(self.store, "breaker_subscribe", None)
        if subscribe is None:
            return
        ref = weakref.WeakMethod(self.on_event)

        def on_event(message: str) -> None:
            method = ref()
            if method is not None:
                method(message)

        try:
            self.unsub = subscribe(on_event)
        except Exception:  # pragma: no cover - a third-party store's bug: keep state_refresh
            logger.exception("circuit breaker %r: could not subscribe to its store", self.name)
            return
        weakref.finalize(self, self.unsub)

    def on_event(self, message: str) -> None:
        """A transition somewhere (``"<tag> <gen> <state>"``), or ``""``: events were lost."""
        views = self.views
        if not message:
            # (Re)subscribed: forget every belief except an open deadline still running.
            now = time.monotonic()
            for k in [k for k, v in views.items() if v.state == "closed" or now >= v.fresh_until]:
                del views[k]
            # Events may have been lost, and with them a restart of the store that lost the
            # open states this process knows, also before the first subscription came up (a
            # trip, then a restart, then the subscription): re-seed them on every (re)start.
            # A no-op where the store still has them (the "restore" write is stale).
            for k, (gen, until) in list(self.opens.items()):
                if now < until:
                    self._reseed(k, gen, until)
            return
        tag, _, rest = message.partition(" ")
        key = self.tags.get(tag)
        if key is None:
            return
        v = views.get(key)
        if v is None:
            return
        gen_text, _, state = rest.partition(" ")
        try:
            gen = int(gen_text)
        except ValueError:
            gen = v.gen + 1
        if state == v.state and gen == v.gen:
            return  # this process already knows (it made the transition)
        v.fresh_until = 0.0  # ask at the next call (concurrent callers share one re-read)
        v.floor = max(v.floor, gen)

    # ------------------------------------------------------------------ re-seeding

    def _reseed(self, key: str, gen: int, until: float) -> None:
        """Write back, in the background, the open state the store has lost (once per key
        at a time)."""
        if key in self.reseeding:
            return
        self.reseeding.add(key)
        self.background.keep(asyncio.ensure_future(self._reseed_task(key, gen, until)))

    async def _reseed_task(self, key: str, gen: int, until: float) -> None:
        # The shared store itself, never a fallback: locally the deadline is already in force.
        store = self.store.primary if isinstance(self.store, FallbackStore) else self.store
        delay = 0.05
        try:
            while True:
                left_us = math.ceil((until - time.monotonic()) * 1e6)
                if left_us <= 0:
                    return
                try:
                    reply = await store.breaker_record(self.spec, key, "restore", gen, "", left_us)
                except ResilienceError:
                    # Unreachable (or degraded): try again until the deadline passes.
                    await asyncio.sleep(min(delay, left_us / 1e6))
                    delay = min(delay * 2, 2.0)
                    continue
                if not reply.stale:
                    logger.warning(
                        "circuit breaker %r%s: the store had lost its open state; re-seeded it "
                        "(generation %d, %.3f s left)",
                        self.name,
                        f" [{key}]" if key else "",
                        gen,
                        reply.wait_us / 1e6,
                        extra={"breaker": self.name, "key": key},
                    )
                self.learn(key, reply)
                return
        except Exception:  # a third-party store's bug: the local deadline still holds
            logger.exception("circuit breaker %r: could not re-seed the store", self.name)
        finally:
            self.reseeding.discard(key)
