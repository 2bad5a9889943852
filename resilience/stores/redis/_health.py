"""The small breaker in front of Redis: fail fast while it is down, probe it with backoff.

Every Redis store has one :class:`StoreHealth`. It bounds and watches each call:

- **Bounded.** A whole call (the wait for one of the store's connection slots, connecting,
  the command, a NOSCRIPT reload and redis-py's own retries) is cancelled after the store's
  ``timeout`` and becomes :class:`resilience.StoreUnavailable`. A hanging or slow Redis
  (``SIGSTOP``, ``DEBUG SLEEP``, a dropped network, more callers than connections) therefore
  costs a caller at most ``timeout`` plus scheduling noise, never a hang, and the policy's
  fallback decides. redis-py disconnects a connection whose command was cancelled, so no
  reply is ever delivered to the wrong caller.
- **Degraded.** The first outage-like failure (connection refused or reset, timeout, a
  failover in progress, a read-only replica, ``LOADING``/``BUSY``/``CLUSTERDOWN``/``OOM``/
  ``MISCONF``...) puts the store in *degraded* mode: calls fail at once with
  ``StoreUnavailable`` without touching Redis, so the policies' fallback decides in
  microseconds and a dead Redis is not hammered.
- **Probed.** While degraded, one call at a time is let through as a probe once the next
  probe time has come. Probe times are spaced by exponential backoff with jitter, from
  :data:`PROBE_MIN` doubling up to :data:`PROBE_MAX` seconds (each delay drawn uniformly in
  ``[d/2, d]``), so a fleet does not probe in lockstep. A successful probe (any answer from
  Redis) ends degraded mode: the next call is shared again.
- **Visible.** Entering and leaving degraded mode logs a warning / info line on the
  ``resilience`` logger and tells the store's observers
  (:meth:`resilience.stores.StoreEvents.on_degraded`; the policies forward it to telemetry:
  a span event and a metric).

Not every timeout is an outage: a call that had to queue for a connection slot and then ran
out of time while Redis answered other calls says that Redis is slow or saturated, not down. It
falls back (:class:`resilience.StoreUnavailable`) without degrading the store, so the calls that
do get a connection keep being decided by Redis.

Reply errors that say nothing about availability (``WRONGTYPE``, ``NOPERM``, a script error:
see :func:`resilience.stores.redis._errors.is_reply_error`) do not degrade the store either:
the store raises :class:`resilience.StoreError` for them, which no fallback hides.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from resilience.errors import StoreUnavailable
from resilience.stores._events import StoreObservers
from resilience.stores.redis._errors import is_outage, redact

if TYPE_CHECKING:
    from resilience.stores.redis._core import RedisCore

__all__ = ["PROBE_MAX", "PROBE_MIN", "StoreHealth", "health_of"]

logger = logging.getLogger("resilience")

#: First probe delay after a failure (seconds, before jitter).
PROBE_MIN = 0.1
#: Longest probe delay (seconds): once Redis is back, shared decisions resume within this.
PROBE_MAX = 2.0


class StoreHealth:
    """Degraded-mode tracking and call bounding for one store (see the module docs).

    Args:
        label: the store's label, for logs and events (never contains credentials).
        timeout: the longest one call may take, in seconds.
        secrets: strings to mask in exception messages (the store's password, user name).
        clock: a monotonic clock in seconds.
        probe_min, probe_max: the probe backoff bounds in seconds.
        observers: where entering and leaving degraded mode is reported (the store's).
    """

    def __init__(
        self,
        label: str,
        timeout: float,
        *,
        secrets: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        probe_min: float = PROBE_MIN,
        probe_max: float = PROBE_MAX,
        observers: StoreObservers | None = None,
    ) -> None:
        self.label = label
        self.observers = observers if observers is not None else StoreObservers()
        self.timeout = timeout
        self.secrets = tuple(s for s in secrets if s)
        self._clock = clock
        self.probe_min = probe_min
        self.probe_max = probe_max
        #: True while the store is degraded.
        self.degraded = False
        self._failures = 0
        self._next_probe = 0.0
        self._probing = False
        self._reason = ""
        #: Calls Redis answered so far (compared across a call that timed out, see timed_out).
        self.oks = 0
        #: Seconds a command has been taking once it had a connection slot (a moving average
        #: over the calls that queued for one; 0 until such a call succeeded).
        self.round_trip = 0.0

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "healthy"
        return f"StoreHealth({self.label!r}, {state})"

    def _probe_delay(self) -> float:
        d = min(self.probe_max, self.probe_min * 2 ** min(self._failures - 1, 30))
        return random.uniform(d / 2, d)

    def _fail_fast(self) -> StoreUnavailable:
        left = max(self._next_probe - self._clock(), 0.0)
        return StoreUnavailable(
            f"store {self.label} is degraded ({self._reason}); next probe in {left:.3f}s"
        )

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` at once if degraded and no probe is due."""
        if self.degraded and (self._probing or self._clock() < self._next_probe):
            raise self._fail_fast()

    # The call protocol (the Redis store's ``_eval`` runs it inline, on every decision):
    #     probe = health.enter()
    #     try: <the call, bounded by health.timeout>
    #     except StoreUnavailable as exc: raise health.failed(exc, probe) from exc.__cause__
    #     except StoreError: health.succeeded(); raise     (Redis answered: it is up)
    #     except <our deadline>: raise health.timed_out(probe, ...) from None
    #     except BaseException: health.abandoned(probe); raise
    #     health.succeeded()

    def enter(self) -> bool:
        """Before a call: fail fast while degraded and no probe is due (raise
        :class:`StoreUnavailable`); otherwise return whether this call is the probe."""
        if not self.degraded:
            return False
        if self._probing or self._clock() < self._next_probe:
            raise self._fail_fast()
        self._probing = True
        return True

    def failed(self, exc: StoreUnavailable, probe: bool) -> StoreUnavailable:
        """The call failed with ``exc`` (its ``__cause__`` the redis error): record an outage,
        and return the exception to raise, its message redacted."""
        cause = exc.__cause__
        if cause is None or is_outage(cause):
            self._on_failure(cause)
        elif probe:
            # Redis answered (with an error unrelated to availability): it is up.
            self._on_success()
        return StoreUnavailable(redact(str(exc), self.secrets))

    def timed_out(
        self, probe: bool = False, since: int = -1, waited: float = 0.0
    ) -> StoreUnavailable:
        """The call was cancelled at the timeout (redis-py drops a connection whose command was
        in flight): an outage, unless the call queued for a connection slot (``since``: the
        value of :attr:`oks` when it started queueing, ``waited``: seconds it queued, -1 and 0
        for a call that did not) and Redis answered other calls meanwhile: then Redis is slow
        or saturated, not down, and the store stays healthy. Return the exception to raise."""
        if since < 0 or self.oks == since:
            self._on_failure(None)
        elif probe:  # pragma: no cover - a probe never queues behind answered calls
            self._probing = False
        if waited > 0:
            return StoreUnavailable(
                f"store {self.label} did not answer within {self.timeout:.3f}s, "
                f"{waited:.3f}s of which were spent waiting for a free connection"
            )
        return StoreUnavailable(f"store {self.label} did not answer within {self.timeout:.3f}s")

    def queue_timed_out(self, since: int, slots: int) -> StoreUnavailable:
        """The call ran out of time waiting for one of the store's ``slots`` connection slots
        (see :meth:`timed_out` for when that counts as an outage)."""
        if self.oks == since:
            self._on_failure(None)
        return StoreUnavailable(
            f"store {self.label}: no connection free within {self.timeout:.3f}s "
            f"({slots} commands in flight, the store's max_concurrency)"
        )

    def no_time_left(self, left: float) -> StoreUnavailable:
        """A call got its connection slot with only ``left`` seconds of its timeout, less than
        :attr:`round_trip`: it falls back without sending (not an outage)."""
        return StoreUnavailable(
            f"store {self.label}: {left * 1000:.0f} ms of the {self.timeout:.3f}s timeout left "
            f"after waiting for a free connection, less than a round trip takes "
            f"({self.round_trip * 1000:.0f} ms): not sent"
        )

    def observe_round_trip(self, seconds: float) -> None:
        """A call that queued for its connection slot was answered ``seconds`` after it got
        the slot: update :attr:`round_trip` (exponential moving average, weight 1/4)."""
        rt = self.round_trip
        self.round_trip = seconds if rt == 0.0 else rt + (seconds - rt) / 4

    def abandoned(self, probe: bool) -> None:
        """The caller was cancelled: says nothing about Redis (a probe is due again)."""
        if probe:
            self._probing = False

    def succeeded(self) -> None:
        """Redis answered."""
        self.oks += 1
        if self.degraded:
            self._on_success()

    def _on_failure(self, cause: BaseException | None) -> None:
        self._probing = False
        self._failures += 1
        self._next_probe = self._clock() + self._probe_delay()
        if not self.degraded:
            self.degraded = True
            self._reason = (
                "timeout"
                if cause is None or isinstance(cause, asyncio.TimeoutError)
                else type(cause).__name__
            )
            logger.warning(
                "store %s is unreachable (%s): degraded mode, policies use their fallback",
                self.label,
                self._reason,
                extra={"store": self.label, "degraded": True, "reason": self._reason},
            )
            self.observers.degraded(self.label, True, self._reason)

    def _on_success(self) -> None:
        self._probing = False
        if self.degraded:
            self.degraded = False
            self._failures = 0
            logger.info(
                "store %s answers again: shared state resumes",
                self.label,
                extra={"store": self.label, "degraded": False},
            )
            self.observers.degraded(self.label, False, "recovered")

    def reset(self) -> None:
        """Forget any failure: the next call goes to Redis (used by tests and after a fork)."""
        self.degraded = False
        self._failures = 0
        self._probing = False
        self._next_probe = 0.0


def health_of(store: RedisCore) -> StoreHealth:
    """The :class:`StoreHealth` of a Redis store (tests and fault drills read it)."""
    return store._health
