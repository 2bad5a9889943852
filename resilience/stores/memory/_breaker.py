"""Circuit-breaker decisions of the in-process store (the protocol in ``stores/base.py``).

The same algorithm as ``stores/redis/lua/breaker_*.lua``, on the store's clock. Each operation
runs without an ``await``, so it is atomic on the event loop.

The failure log holds only the failures of the last window: each recorded failure trims it,
and once failures stop arriving a timer on the event loop drops what is left when the newest
entry leaves the window (the Redis log key expires ``window`` + 1 s after its last failure).
Successes never touch it, so the happy path stays free of clock reads.

:meth:`MemoryBreaker.breaker_admit` offers the closed breaker's admission synchronously, for a
policy that finds it on a store whose decisions are local (see ``CircuitBreaker.execute``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable

from resilience.stores._unknown_state import UnknownStates
from resilience.stores.base import (
    BreakerAction,
    BreakerEventCallback,
    BreakerOutcomeName,
    BreakerReply,
    BreakerSpec,
    BreakerStateName,
)
from resilience.stores.memory._core import PACE, MemoryCore

__all__ = ["MemoryBreaker"]

#: The states a breaker can be in; anything else found in a store reads as closed.
_STATES = frozenset(("closed", "open", "half_open"))

_SWEEP_EVERY = 4096
#: A breaker nobody touched for this long after its break (and window) is forgotten, as the
#: Redis keys expire (``PEXPIRE``).
_IDLE_US = 3_600_000_000


def _no_op() -> None:
    return None


def _hex(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").hex()


class _Breaker:
    __slots__ = (
        "allow",
        "expires",
        "failures",
        "gen",
        "leases",
        "open_until",
        "probe_ok",
        "quiet_until",
        "state",
        "sweep",
        "trips",
    )

    def __init__(self) -> None:
        self.state: BreakerStateName = "closed"
        self.open_until = 0
        self.gen = 0
        self.trips = 0
        self.probe_ok = 0
        # A failure with a wait hint before this time does not count (see breaker_record).
        self.quiet_until = 0
        self.failures: deque[int] = deque()
        self.leases: dict[str, int] = {}
        self.expires = 0
        self.allow: BreakerReply | None = None
        # The event loop on which the failure-log timer is pending, if any.
        self.sweep: asyncio.AbstractEventLoop | None = None


def _expire_failures(b: _Breaker, now_us: Callable[[], int], window: int) -> None:
    """The failure-log timer: drop the entries that have left the window; while some remain,
    come back when the newest of them leaves it."""
    b.sweep = None
    f = b.failures
    if not f:
        return
    horizon = now_us() - window
    while f and f[0] <= horizon:
        f.popleft()
    if f:
        _arm_sweep(b, now_us, window, f[-1] - horizon)


def _arm_sweep(b: _Breaker, now_us: Callable[[], int], window: int, delay_us: int) -> None:
    loop = asyncio.get_running_loop()
    # A little after the entry leaves the window (never a busy loop on a frozen test clock).
    delay = max(delay_us, 1000) / 1e6 + 0.001
    loop.call_later(delay, _expire_failures, b, now_us, window)
    b.sweep = loop


def _reply(
    b: _Breaker,
    wait: int = 0,
    permit: str = "",
    token: str = "",
    old: str = "",
    stale: bool = False,
    failures: int = 0,
) -> BreakerReply:
    return BreakerReply(b.state, b.gen, wait, permit, token, old, stale, failures)


class MemoryBreaker(MemoryCore):
    """Breaker state in process memory: one record per ``(name, key)``."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._breakers: dict[tuple[str, str], _Breaker] = {}
        self._probe_tokens = itertools.count(1)
        self._breakers_created = 0
        self._unknown = UnknownStates()

    def _breaker(self, spec: BreakerSpec, key: str, now: int) -> _Breaker:
        b = self._breakers.get((spec.name, key))
        if b is not None and b.expires and b.expires <= now:
            b = None  # idle past its expiry: forgotten, like an expired Redis key
        if b is None:
            self._breakers_created += 1
            if self._breakers_created % _SWEEP_EVERY == 0:
                for k in [k for k, v in self._breakers.items() if v.expires <= now]:
                    del self._breakers[k]
            b = self._breakers[(spec.name, key)] = _Breaker()
        elif b.state not in _STATES:
            self._unknown.warn(self.label, spec.name, key, b.state)
            b.state = "closed"
        return b

    @staticmethod
    def _touch(b: _Breaker, spec: BreakerSpec, now: int) -> None:
        rem = max(b.open_until - now, 0) if b.state == "open" else 0
        b.expires = now + rem + spec.window_us + spec.probe_lease_us + _IDLE_US

    @staticmethod
    def _trim(b: _Breaker, now: int, window: int) -> None:
        f = b.failures
        horizon = now - window
        while f and f[0] <= horizon:
            f.popleft()

    def breaker_subscribe(self, callback: BreakerEventCallback) -> Callable[[], None]:
        """No events: this store's decisions are local, so a breaker never caches them."""
        return _no_op

    def breaker_tag(self, name: str, key: str) -> str:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_tag` (this store pushes no
        messages; the tag is the UTF-8 of name and key in hex, distinct and space-free)."""
        return f"{_hex(name)}:{_hex(key)}"

    async def breaker_acquire(self, spec: BreakerSpec, key: str) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_acquire`."""
        if self._pace():
            await asyncio.sleep(0)
        b = self._breakers.get((spec.name, key))
        if b is not None and b.state == "closed":
            # The happy path: one immutable reply per generation, reused.
            allow = b.allow
            if allow is None or allow.gen != b.gen:
                allow = b.allow = _reply(b, permit="allow")
            return allow
        now = self._now_us()
        b = self._breaker(spec, key, now)
        if b.state == "closed":
            return _reply(b, permit="allow")
        old = ""
        if b.state == "open":
            if now < b.open_until:
                return _reply(b, wait=b.open_until - now, permit="deny")
            b.gen += 1
            b.state = "half_open"
            b.probe_ok = 0
            b.leases.clear()
            old = "open"
            self._touch(b, spec, now)
        leases = b.leases
        for tok in [t for t, exp in leases.items() if exp <= now]:
            del leases[tok]
        if len(leases) < spec.half_open_max_calls:
            token = f"p{next(self._probe_tokens)}"
            leases[token] = now + spec.probe_lease_us
            self._touch(b, spec, now)
            return _reply(b, permit="probe", token=token, old=old)
        wait = max(min(leases.values()) - now, 1)
        return _reply(b, wait=wait, permit="deny", old=old)

    def breaker_admit(self, spec: BreakerSpec, key: str) -> int | None:
        """Admit a call now if ``key``'s breaker is closed: its generation (the call is not a
        probe, it holds no token); otherwise do nothing.

        Synchronous: the decision :meth:`breaker_acquire` takes on a closed breaker, without
        the coroutine. ``None``, with nothing changed and no decision counted, when the breaker
        is not closed (or not known yet), and on the store's pace turn (every
        :data:`~resilience.stores.memory._core.PACE`-th decision yields to the loop first):
        the caller then awaits :meth:`breaker_acquire`.
        """
        paced = self._paced + 1
        if paced >= PACE:
            return None
        b = self._breakers.get((spec.name, key))
        if b is None or b.state != "closed":
            return None
        self._paced = paced
        return b.gen

    def _trip(self, b: _Breaker, spec: BreakerSpec, now: int, hint: int, old: str) -> BreakerReply:
        b.trips += 1
        brk = spec.break_us
        if spec.max_break_us > brk and b.trips > 1:
            brk = min(brk * 2 ** (b.trips - 1), spec.max_break_us)
        brk = max(brk, hint)
        b.gen += 1
        b.state = "open"
        b.open_until = now + brk
        b.probe_ok = 0
        b.failures.clear()
        b.leases.clear()
        self._touch(b, spec, now)
        return _reply(b, wait=brk, old=old)

    async def breaker_record(
        self,
        spec: BreakerSpec,
        key: str,
        outcome: BreakerOutcomeName,
        gen: int,
        token: str,
        hint_us: int,
    ) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_record`."""
        now = self._now_us()
        b = self._breaker(spec, key, now)
        if outcome == "restore":
            return self._restore(b, spec, now, gen, hint_us)
        if b.state == "half_open":
            if not token or b.leases.pop(token, None) is None:
                return _reply(b, stale=True)
            if outcome == "fail":
                return self._trip(b, spec, now, hint_us, "half_open")
            if outcome == "ok":
                b.probe_ok += 1
                if b.probe_ok >= spec.success_threshold:
                    b.gen += 1
                    b.state = "closed"
                    b.trips = 0
                    b.probe_ok = 0
                    b.failures.clear()
                    b.leases.clear()
                    self._touch(b, spec, now)
                    return _reply(b, old="half_open")
                self._touch(b, spec, now)
            return _reply(b)
        if b.state == "open":
            if outcome == "fail" and hint_us > 0 and now + hint_us > b.open_until:
                b.open_until = now + hint_us
                self._touch(b, spec, now)
            return _reply(b, wait=max(b.open_until - now, 0), stale=True)
        if gen != b.gen or token:
            return _reply(b, stale=True)
        if outcome != "fail":
            return _reply(b)
        if hint_us > 0:
            if now < b.quiet_until:
                return _reply(b, stale=True)  # the same upstream event: counted once
            b.quiet_until = now + hint_us
        b.failures.append(now)
        self._trim(b, now, spec.window_us)
        n = len(b.failures)
        if n >= spec.failure_threshold:
            return self._trip(b, spec, now, hint_us, "closed")
        if b.sweep is not asyncio.get_running_loop():
            _arm_sweep(b, self._now_us, spec.window_us, spec.window_us)
        self._touch(b, spec, now)
        return _reply(b, failures=n)

    def _restore(
        self, b: _Breaker, spec: BreakerSpec, now: int, gen: int, left_us: int
    ) -> BreakerReply:
        """``breaker_record(outcome="restore")``: see ``redis/lua/breaker_record.lua``."""
        if b.gen < gen and (b.gen == 0 or b.state != "closed"):
            until = now + left_us
            if b.state == "open" and b.open_until > until:
                until = b.open_until
            b.gen = gen
            b.state = "open"
            b.open_until = until
            b.trips = max(b.trips, 1)
            b.probe_ok = 0
            b.failures.clear()
            b.leases.clear()
            self._touch(b, spec, now)
            return _reply(b, wait=until - now)
        wait = max(b.open_until - now, 0) if b.state == "open" else 0
        return _reply(b, wait=wait, stale=True)

    async def breaker_admin(
        self, spec: BreakerSpec, key: str, action: BreakerAction, duration_us: int
    ) -> BreakerReply:
        """See :meth:`resilience.stores.base.BreakerOps.breaker_admin`."""
        now = self._now_us()
        b = self._breaker(spec, key, now)
        if action == "state":
            if b.state == "closed":
                self._trim(b, now, spec.window_us)
                return _reply(b, failures=len(b.failures))
            if b.state == "open":
                if now < b.open_until:
                    return _reply(b, wait=b.open_until - now)
                return BreakerReply("half_open", b.gen, 0, "", "", "", False, 0)
            return _reply(b)
        old = ""
        if action == "open":
            if b.state != "open":
                old = b.state
                b.gen += 1
            b.state = "open"
            b.open_until = now + duration_us
            b.probe_ok = 0
            b.failures.clear()
            b.leases.clear()
            self._touch(b, spec, now)
            return _reply(b, wait=duration_us, old=old)
        if b.state != "closed":
            old = b.state
        b.gen += 1
        b.state = "closed"
        if action == "reset":
            b.trips = 0
            b.quiet_until = 0
        b.probe_ok = 0
        b.failures.clear()
        b.leases.clear()
        self._touch(b, spec, now)
        return _reply(b, old=old)
