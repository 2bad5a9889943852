"""What one process believes about a breaker's keys, so that most calls skip the store.

Two beliefs per key, both learned from store replies (:meth:`View.learn`):

- **The view** (:class:`KeyView`, with ``state_refresh > 0`` only): "closed" is trusted until
  ``state_refresh`` seconds after the reply, "open" until the break's end. A call admitted on
  a fresh "closed" makes no round trip. Replies of an older generation than one already
  seen (or announced by a pushed transition) are not believed.
- **The known open deadlines** (remote stores only): an open state learned from the store is
  kept until its deadline even if the store forgets it (a restart, a flush): a reply older
  than the known open generation that is not a written close means the state was lost, and
  the call is refused. :mod:`resilience.policies.breaker._sync` then re-seeds the store.

Everything here is synchronous and local; the two hooks that reach the store (following its
pushed transitions, re-seeding a lost open state) are filled in by
:class:`resilience.policies.breaker._sync.SyncedView`.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from resilience.stores.base import BreakerReply

__all__ = ["VIEW_MAX", "KeyView", "Permit", "View", "local_permit"]

#: At most this many keys are remembered (views, tags, known deadlines); beyond it, the views
#: start over (the store still decides) and no further deadline is kept.
VIEW_MAX = 10_000


class Permit(NamedTuple):
    """What a call admitted by the breaker holds: the generation it started in, and the probe
    permit's token (``""``: not a probe)."""

    gen: int
    token: str


_LOCAL_PERMITS: dict[int, Permit] = {}


def local_permit(gen: int) -> Permit:
    """The (shared) permit of a call that is not a probe, in generation ``gen``."""
    p = _LOCAL_PERMITS.get(gen)
    if p is None:
        if len(_LOCAL_PERMITS) > 64:
            _LOCAL_PERMITS.clear()
        p = _LOCAL_PERMITS[gen] = Permit(gen, "")
    return p


class KeyView:
    """What this process believes about one key, to skip store round trips."""

    __slots__ = ("floor", "fresh_until", "gen", "refresh", "state")

    def __init__(self, state: str, gen: int, fresh_until: float) -> None:
        self.state = state
        self.gen = gen
        # A transition to this generation was announced: older replies are not cached.
        self.floor = 0
        # closed: believed until then; open: the break's end (monotonic seconds).
        self.fresh_until = fresh_until
        # While one task re-reads an expired "closed", the others wait for its answer.
        self.refresh: asyncio.Future[None] | None = None


class View:
    """One breaker's beliefs about its keys (see the module documentation).

    Args:
        name: the breaker's name (pushed transitions name keys by their tag).
        state_refresh: seconds a "closed" is trusted; ``0`` keeps no view.
        remote: whether the store is shared (its replies can be lost to a cancellation, it can
            lose state): only then are open deadlines kept.
    """

    __slots__ = ("events_loop", "name", "opens", "remote", "state_refresh", "tags", "views")

    def __init__(self, name: str, state_refresh: float, remote: bool) -> None:
        self.name = name
        self.state_refresh = state_refresh
        self.remote = remote
        self.views: dict[str, KeyView] = {}
        self.tags: dict[str, str] = {}  # store.breaker_tag(name, key) -> key, for pushed events
        # key -> (generation, monotonic deadline) of an open state learned from the store
        # (remote stores only): kept until the deadline even if the store forgets it.
        self.opens: dict[str, tuple[int, float]] = {}
        # The event loop whose pushed transitions are followed (see _follow).
        self.events_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ hooks

    def _tag(self, key: str) -> str | None:
        """How pushed transitions name ``key``'s breaker (a plain view follows none)."""
        return None

    def _follow(self) -> None:
        """Start following the store's pushed transitions on the running loop (a plain view
        follows nothing)."""
        self.events_loop = asyncio.get_running_loop()

    def _reseed(self, key: str, gen: int, until: float) -> None:
        """Write back the open state ``(gen, until)`` the store has lost (a plain view does
        not)."""

    # ------------------------------------------------------------------ learning

    def learn(self, key: str, reply: BreakerReply, local: bool = False) -> float:
        """Update what this process believes about ``key`` from a store reply (``local``: the
        fallback's, the shared store did not answer).

        Returns the seconds left of an open state this process knows and the store has lost
        or cannot confirm (the call must be refused; the store is being re-seeded), else 0.
        """
        left = 0.0
        known: tuple[int, float] | None = None
        if self.remote and (self.opens or reply.state == "open"):
            known = self.lost_open(key, reply, local)
        if self.state_refresh <= 0:
            return known[1] - time.monotonic() if known is not None else left
        if self.events_loop is not asyncio.get_running_loop():
            self._follow()
        views = self.views
        v = views.get(key)
        now = time.monotonic()
        state, gen = reply.state, reply.gen
        if known is not None:
            gen, fresh = known
            state = "open"
            left = fresh - now
        elif state == "closed":
            fresh = now + self.state_refresh
        elif state == "open" and reply.wait_us > 0:
            fresh = now + reply.wait_us / 1e6
        else:
            views.pop(key, None)
            return left
        if v is not None and (gen < v.floor or (gen < v.gen and now < v.fresh_until)):
            return left  # an older reply overtaken by a newer one (or by an announced transition)
        if v is None:
            if len(views) >= VIEW_MAX:
                views.clear()
                self.tags.clear()
            views[key] = KeyView(state, gen, fresh)
            tag = self._tag(key)
            if tag is not None and len(self.tags) < VIEW_MAX:
                self.tags[tag] = key
        else:
            v.state = state
            v.gen = gen
            v.fresh_until = fresh
        return left

    def lost_open(self, key: str, reply: BreakerReply, local: bool) -> tuple[int, float] | None:
        """Keep the open deadlines learned from the shared store; ``(gen, deadline)`` of the
        one ``reply`` contradicts because the store has lost it (re-seeding it), else ``None``.

        Generations only grow while the store keeps its state, and every write of the state
        sets one (>= 1): a reply older than the known open generation means the state was
        lost, unless it is a written close (obeyed). A newer reply is the truth. A fallback's
        reply (``local``) says nothing about the shared state: the known deadline holds, and
        nothing is learned from it (local decisions are never replayed into the store).
        """
        now = time.monotonic()
        opens = self.opens
        known = opens.get(key)
        if known is not None:
            gen, until = known
            theirs = now + reply.wait_us / 1e6 if reply.state == "open" else 0.0
            if now >= until:
                del opens[key]  # passed
                known = None
            elif local:
                if theirs >= until:
                    return None
                self._reseed(key, gen, until)  # applied once the store answers, if it lost it
                return known
            elif reply.gen > gen or (reply.gen == gen and reply.state != "open"):
                del opens[key]  # a newer transition (a close is obeyed at once)
                known = None
            elif reply.gen < gen:
                if reply.gen > 0 and reply.state == "closed":
                    del opens[key]  # a close written after the loss: obeyed
                    return None
                if theirs < until:
                    self._reseed(key, gen, until)
                    return known
                known = None  # re-opened since, for longer: follow the store
        if local:
            return None
        if reply.state == "open" and reply.wait_us > 0:
            if known is None and len(opens) >= VIEW_MAX:
                for k in [k for k, (_, u) in opens.items() if u <= now]:
                    del opens[k]
                if len(opens) >= VIEW_MAX:
                    return None
            opens[key] = (reply.gen, now + reply.wait_us / 1e6)
        elif known is not None:
            del opens[key]  # open at the known generation, its break over
        return None
