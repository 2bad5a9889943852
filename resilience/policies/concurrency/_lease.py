"""A permit held by a running call: its lease is renewed in the background, and it is given
back exactly once, shielded from cancellation.

Renewal costs nothing for a call shorter than a third of the lease: a timer
(``loop.call_later``) fires at ``lease / 3`` and only then starts a task that renews the
permit in the store (and arms the next timer). A renewal that fails (the store is down) is
not retried sooner: the lease runs on, and the next timer tries again.

Giving back first stops the renewals and waits for one in flight (a renewal that reached the
store after the release would hold the permit again), then releases.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from resilience.errors import StoreUnavailable
from resilience.stores.base import ConcurrencySpec, Store

__all__ = ["Lease", "give_back", "retrieve"]

logger = logging.getLogger("resilience")


def retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: fetch a background task's exception so asyncio never logs it."""
    if not task.cancelled():
        task.exception()


class Lease:
    """One permit (``token``) of ``spec`` for ``key``, held by this process."""

    __slots__ = (
        "_handle",
        "_local",
        "_loop",
        "_period",
        "_task",
        "closed",
        "counted",
        "key",
        "spec",
        "store",
        "token",
    )

    def __init__(self, store: Store, spec: ConcurrencySpec, key: str, token: str) -> None:
        self.store = store
        self.spec = spec
        self.key = key
        self.token = token
        self.closed = False
        #: Whether telemetry counted this permit in flight (and so must count it out).
        self.counted = False
        self._local = bool(store.decides_locally)
        self._loop = asyncio.get_running_loop()
        self._period = spec.lease_us / 3e6
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._period, self._due)

    def _due(self) -> None:
        self._handle = None
        if not self.closed:
            self._task = self._loop.create_task(self._renew())
            self._task.add_done_callback(retrieve)

    async def _renew(self) -> None:
        try:
            held = await self.store.concurrency_renew(self.spec, self.key, self.token)
            if not held:
                logger.info(
                    "concurrency limit %r: a permit's lease had lapsed (store restarted, or "
                    "this process stalled); it is held again",
                    self.spec.name,
                )
        except StoreUnavailable:
            pass  # the lease runs on; the next timer tries again
        except Exception:
            logger.warning("concurrency limit %r: could not renew a permit", self.spec.name)
        finally:
            self._task = None
            if not self.closed:
                self._handle = self._loop.call_later(self._period, self._due)

    async def close(self) -> None:
        """Stop renewing and give the permit back (once; call it shielded, see
        :func:`give_back`)."""
        if self.closed:
            return
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        task = self._task
        if task is not None and not task.done():
            if self._local:
                task.cancel()  # a local renewal never suspends: it has not started yet
            else:
                await asyncio.wait({task})
        await self.store.concurrency_release(self.spec, self.key, self.token)


async def give_back(lease: Lease, *, reraise: bool) -> None:
    """Release ``lease``, shielded: a cancellation that lands meanwhile lets the release go on
    in the background and, with ``reraise``, propagates once it is handed off (without it the
    caller is already propagating an exception, which must not be replaced)."""
    if lease.closed:
        return
    if lease._local:  # a local release completes without suspending: nothing can cut it
        await lease.close()
        return
    task = asyncio.ensure_future(lease.close())
    task.add_done_callback(retrieve)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if reraise:
            raise
    except Exception:
        logger.warning(
            "concurrency limit %r: could not release a permit (its lease frees it)",
            lease.spec.name,
        )
