"""pybreaker interop: an existing ``pybreaker.CircuitBreaker`` as a pipeline policy.

pybreaker protects *sync* callables: its decorator applied to an ``async def`` only creates
the coroutine inside the protected region, so an exception raised when the coroutine is
awaited is never counted, and its ``call_async`` needs Tornado. :class:`PyBreakerPolicy`
runs the coroutine itself and then feeds the outcome through the breaker's own ``call``
(so pybreaker's counters, storage, exclusions, listeners and state machine all apply as
they do for sync code).

``pybreaker`` is an optional dependency (``pip install resilience[pybreaker]``); it is
imported when a policy is built.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from resilience import telemetry
from resilience.errors import CircuitOpen, ResilienceError
from resilience.pipeline import CallContext, PolicyBase
from resilience.policies._validate import check_instance, check_name

__all__ = ["PyBreakerPolicy", "pybreaker_policy"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

_OPEN_ERROR: type[CircuitOpen] | None = None


def _pybreaker() -> Any:
    try:
        import pybreaker
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PyBreakerPolicy needs pybreaker: pip install 'resilience[pybreaker]'"
        ) from exc
    return pybreaker


def _open_error() -> type[CircuitOpen]:
    """``PyBreakerOpen``: both a :class:`resilience.CircuitOpen` and a
    ``pybreaker.CircuitBreakerError``, so either ``except`` clause catches it."""
    global _OPEN_ERROR
    if _OPEN_ERROR is None:
        pb = _pybreaker()
        _OPEN_ERROR = type(
            "PyBreakerOpen",
            (CircuitOpen, pb.CircuitBreakerError),
            {
                "__doc__": "A pybreaker breaker is open: both resilience.CircuitOpen and "
                "pybreaker.CircuitBreakerError.",
                "__module__": __name__,
            },
        )
    return _OPEN_ERROR


def _state_name(state: Any) -> str:
    name = str(getattr(state, "name", state))
    return "half_open" if name == "half-open" else name


class PyBreakerPolicy(PolicyBase):
    """Use an existing ``pybreaker.CircuitBreaker`` as a pipeline policy or decorator.

    Per call:

    1. If the breaker is open and its ``reset_timeout`` has not elapsed (pybreaker's rule, on
       this machine's clock), fail fast with ``PyBreakerOpen``, which is both a
       :class:`resilience.CircuitOpen` (with ``retry_after``) and a
       ``pybreaker.CircuitBreakerError``.
    2. If the breaker is half-open, or open with its timeout elapsed, this process lets one
       call at a time through as the trial call; concurrent callers fail fast as in 1.
       (pybreaker itself serialises *every* call under a lock held across the call; an
       event loop cannot do that, and pybreaker has no cross-process probe limit anyway.)
    3. Await the coroutine, then replay its outcome through ``breaker.call`` so pybreaker
       counts it: its ``exclude`` list, counters, storage, listeners and transitions apply
       unchanged, and it raises ``CircuitBreakerError`` on the failure that trips it (unless
       built with ``throw_new_error_on_trip=False``).

    Never recorded: :class:`asyncio.CancelledError` (and other non-``Exception`` base
    exceptions), and the library's own rejections (:class:`resilience.ResilienceError`). If
    the breaker opened while the call ran (another call tripped it), the call's outcome is
    returned or raised as is, uncounted.

    Telemetry: every state change pybreaker reports to its listeners is emitted as
    ``breaker_state_change`` (pybreaker notifies in *every* process that notices a change, so
    with ``CircuitRedisStorage`` expect one event per process, not one per fleet).

    Args:
        breaker: the ``pybreaker.CircuitBreaker``.
        name: the name used in telemetry and errors; default the breaker's ``name`` or
            ``"pybreaker"``.
    """

    def __init__(self, breaker: Any, *, name: str | None = None) -> None:
        pb = _pybreaker()
        self.breaker = check_instance(
            "breaker", breaker, pb.CircuitBreaker, "pybreaker.CircuitBreaker"
        )
        self.name = check_name(name) if name is not None else (breaker.name or "pybreaker")
        self._probing = False
        self._error = pb.CircuitBreakerError
        self._open_error = _open_error()
        policy_name = self.name

        def state_change(_self: Any, cb: Any, old_state: Any, new_state: Any) -> None:
            telemetry.breaker_state_change(
                None,
                breaker=policy_name,
                old=_state_name(old_state) if old_state is not None else "closed",
                new=_state_name(new_state),
            )

        listener_cls = type(
            "_TelemetryListener", (pb.CircuitBreakerListener,), {"state_change": state_change}
        )
        breaker.add_listener(listener_cls())

    def __repr__(self) -> str:
        return f"PyBreakerPolicy({self.breaker!r}, name={self.name!r})"

    def _remaining(self) -> float:
        """Seconds until pybreaker lets a trial call through (0 if it would now)."""
        cb = self.breaker
        opened_at = cb._state_storage.opened_at
        if opened_at is None:
            return 0.0
        now = datetime.datetime.now(datetime.timezone.utc)
        end = opened_at + datetime.timedelta(seconds=cb.reset_timeout)
        left: float = (end - now).total_seconds()
        return max(left, 0.0)

    def _reject(self, ctx: CallContext | None, retry_after: float) -> CircuitOpen:
        telemetry.breaker_call(ctx, breaker=self.name, outcome="rejected")
        return self._open_error(self.name, retry_after)

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Pipeline policy: see the class documentation."""
        cb = self.breaker
        state = _state_name(cb.state)  # refreshes from shared storage, as pybreaker does
        trial = False
        if state != "closed":
            remaining = self._remaining() if state == "open" else 0.0
            if remaining > 0:
                raise self._reject(ctx, remaining)
            if self._probing:
                raise self._reject(ctx, 0.0)
            self._probing = trial = True
        try:
            try:
                result = await call()
            except Exception as exc:
                if isinstance(exc, ResilienceError):
                    telemetry.breaker_call(ctx, breaker=self.name, outcome="ignored")
                    raise
                self._replay(ctx, exc, None)
                raise
            except BaseException:
                telemetry.breaker_call(ctx, breaker=self.name, outcome="ignored")
                raise
            self._replay(ctx, None, result)
            return result
        finally:
            if trial:
                self._probing = False

    def _replay(self, ctx: CallContext | None, exc: Exception | None, result: object) -> None:
        """Feed one outcome through pybreaker's own state machine."""
        replayed = False

        def replay() -> object:
            nonlocal replayed
            replayed = True
            if exc is not None:
                raise exc
            return result

        failure = exc is not None and self.breaker.is_system_error(exc)
        try:
            self.breaker.call(replay)
        except self._error:
            if not replayed:
                # It opened while this call ran: the outcome is stale, not counted.
                telemetry.breaker_call(ctx, breaker=self.name, outcome="ignored")
                return
            telemetry.breaker_call(ctx, breaker=self.name, outcome="failure")
            raise  # pybreaker's "threshold reached, circuit breaker opened"
        except Exception as e:
            if e is not exc:
                raise
        telemetry.breaker_call(ctx, breaker=self.name, outcome="failure" if failure else "success")


def pybreaker_policy(breaker: Any, *, name: str | None = None) -> PyBreakerPolicy:
    """Wrap a ``pybreaker.CircuitBreaker`` as a pipeline policy (see
    :class:`PyBreakerPolicy`)."""
    return PyBreakerPolicy(breaker, name=name)
