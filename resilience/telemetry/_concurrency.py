"""What a concurrency limit reports: permits in flight, callers waiting, and their waits.

- ``resilience.concurrency_limit.in_flight`` and ``resilience.concurrency_limit.waiting``:
  UpDownCounters of this process's permits held and callers queued, per limit name (sum
  them over the fleet for the limit's whole picture);
- ``resilience.concurrency_limit.wait.duration``: a histogram of the time from asking to
  holding a permit (or giving up), by result;
- a ``resilience.concurrency_limit.waited`` span event when a call waited or was refused.

The instruments are created once per recording meter, beside the library's others
(:mod:`resilience.telemetry._instruments`); with telemetry disabled each emitter returns
after the cached check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilience._context import CallContext
from resilience.telemetry import names
from resilience.telemetry._instruments import CALL_BUCKETS
from resilience.telemetry._provider import state as _state
from resilience.telemetry._spans import record

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, Meter, UpDownCounter

__all__ = ["concurrency_decision", "concurrency_in_flight", "concurrency_waiting"]


class _ConcurrencyInstruments:
    __slots__ = ("in_flight", "meter", "wait_duration", "waiting")

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.in_flight: UpDownCounter = meter.create_up_down_counter(
            names.METRIC_CONCURRENCY_IN_FLIGHT,
            unit="{call}",
            description="Concurrency-limit permits held by this process.",
        )
        self.waiting: UpDownCounter = meter.create_up_down_counter(
            names.METRIC_CONCURRENCY_WAITING,
            unit="{call}",
            description="Callers of this process queued for a concurrency-limit permit.",
        )
        self.wait_duration: Histogram = meter.create_histogram(
            names.METRIC_CONCURRENCY_WAIT_DURATION,
            unit="s",
            description="Time from asking for a concurrency-limit permit to holding it "
            "(or giving up).",
            explicit_bucket_boundaries_advisory=CALL_BUCKETS,
        )


_cached: list[_ConcurrencyInstruments] = []


def _instruments() -> _ConcurrencyInstruments | None:
    st = _state()
    if not st.enabled or st.instruments is None:
        return None
    meter = st.instruments.meter
    if _cached and _cached[0].meter is meter:
        return _cached[0]
    inst = _ConcurrencyInstruments(meter)
    _cached[:] = [inst]
    return inst


def concurrency_in_flight(limit: str, delta: int) -> None:
    """This process took (``+1``) or returned (``-1``) a permit of limit ``limit``."""
    inst = _instruments()
    if inst is not None:
        inst.in_flight.add(delta, {names.ATTR_CONCURRENCY_NAME: limit})


def concurrency_waiting(limit: str, delta: int) -> None:
    """A caller of this process started (``+1``) or stopped (``-1``) waiting in the queue."""
    inst = _instruments()
    if inst is not None:
        inst.waiting.add(delta, {names.ATTR_CONCURRENCY_NAME: limit})


def concurrency_decision(
    ctx: CallContext | None, *, limit: str, acquired: bool, wait: float, waited: bool
) -> None:
    """A call got a permit (``acquired``) or gave up, after ``wait`` seconds of asking.

    Records ``resilience.concurrency_limit.wait.duration``; when the call ``waited`` in the
    queue or was refused, adds a ``resilience.concurrency_limit.waited`` event to the attempt
    span if the limit runs inside an attempt, else to the call span.
    """
    st = _state()
    if not st.enabled:
        return
    result = names.CONCURRENCY_RESULT_ACQUIRED if acquired else names.CONCURRENCY_RESULT_REJECTED
    inst = _instruments()
    if inst is not None:
        attrs = {names.ATTR_CONCURRENCY_NAME: limit, names.ATTR_CONCURRENCY_RESULT: result}
        inst.wait_duration.record(wait, attrs)
    if waited or not acquired:
        rec = record(ctx)
        if rec is not None:
            target: Any = rec.attempt_span or rec.span
            if target is not None:
                target.add_event(
                    names.EVENT_CONCURRENCY_WAITED,
                    {
                        names.ATTR_CONCURRENCY_NAME: limit,
                        names.ATTR_CONCURRENCY_RESULT: result,
                        names.ATTR_CONCURRENCY_WAIT_TIME: float(wait),
                    },
                )
