"""What Fallback and Hedge report: which alternative served a call (attribute and events on the
call span), fallbacks counted by reason, hedges as child spans marked as hedges."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from resilience import CircuitOpen, Fallback, Hedge, Pipeline, telemetry
from resilience.telemetry import names


class Otel:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tp = TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.mp = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> dict[str, ReadableSpan]:
        return {s.name: s for s in self.exporter.get_finished_spans()}

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            (dict(p.attributes or {}), getattr(p, "value", None))
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == metric
            for p in m.data.data_points
        ]


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    telemetry.configure(tracer_provider=o.tp, meter_provider=o.mp)
    try:
        yield o
    finally:
        telemetry.configure()
        o.tp.shutdown()
        o.mp.shutdown()


class Status503(Exception):
    status = 503


async def test_the_call_span_names_the_alternative_that_served(otel: Otel) -> None:
    async def primary(q: str) -> str:
        raise CircuitOpen("primary", 5)

    async def secondary(q: str) -> str:
        raise Status503()

    async def cached(q: str) -> str:
        return "cached"

    p = Pipeline(Fallback([secondary, cached], name="fb"), name="ask")
    assert await p.call(primary, "q") == "cached"
    span = otel.spans()["ask"]
    attrs = dict(span.attributes or {})
    assert str(attrs[names.ATTR_FALLBACK_ALTERNATIVE]).endswith("cached")
    assert attrs[names.ATTR_FALLBACK_INDEX] == 2
    assert attrs[names.ATTR_OUTCOME] == names.OUTCOME_SUCCESS
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    triggered = [a for n, a in events if n == names.EVENT_FALLBACK_TRIGGERED]
    assert [a[names.ATTR_FALLBACK_REASON] for a in triggered] == ["circuit_open", "upstream_fault"]
    assert [a[names.ATTR_FALLBACK_INDEX] for a in triggered] == [1, 2]
    assert triggered[0][names.ATTR_ERROR_TYPE] == names.ERROR_TYPE_CIRCUIT_OPEN
    assert triggered[1][names.ATTR_ERROR_TYPE] == "503"
    served = [a for n, a in events if n == names.EVENT_FALLBACK_SERVED]
    assert len(served) == 1
    assert served[0][names.ATTR_FALLBACK_INDEX] == 2

    keys = (names.ATTR_FALLBACK_REASON, names.ATTR_FALLBACK_NAME, names.ATTR_OPERATION_NAME)
    counted = {tuple(a[k] for k in keys): v for a, v in otel.points(names.METRIC_FALLBACKS)}
    assert counted == {("circuit_open", "fb", "ask"): 1, ("upstream_fault", "fb", "ask"): 1}


async def test_a_flagged_result_is_counted_as_result(otel: Otel) -> None:
    async def primary() -> str:
        return ""

    async def alt() -> str:
        return "x"

    assert await Pipeline(Fallback(alt, on_result=lambda r: not r), name="op").call(primary) == "x"
    [(attrs, value)] = otel.points(names.METRIC_FALLBACKS)
    assert attrs[names.ATTR_FALLBACK_REASON] == "result"
    assert names.ATTR_ERROR_TYPE not in attrs
    assert value == 1


async def test_no_fallback_no_fallback_telemetry(otel: Otel) -> None:
    async def ok() -> str:
        return "ok"

    async def alt() -> str:
        return "alt"

    assert await Pipeline(Fallback(alt), name="fine").call(ok) == "ok"
    attrs = dict(otel.spans()["fine"].attributes or {})
    assert names.ATTR_FALLBACK_ALTERNATIVE not in attrs
    assert otel.points(names.METRIC_FALLBACKS) == []


async def test_hedges_are_child_spans_marked_as_hedges(otel: Otel) -> None:
    n = 0

    async def call() -> str:
        nonlocal n
        n += 1
        if n == 1:
            await asyncio.sleep(10)
        return f"attempt {n}"

    p = Pipeline(Hedge(0.01, safe=True, name="h"), name="fetch")
    assert await p.call(call) == "attempt 2"
    spans = otel.spans()
    call_span, hedge = spans["fetch"], spans["hedge fetch"]
    attempt = spans["attempt fetch"]
    assert hedge.parent is not None
    assert hedge.parent.span_id == attempt.context.span_id
    hattrs = dict(hedge.attributes or {})
    assert hattrs[names.ATTR_HEDGE] is True
    assert hattrs[names.ATTR_HEDGE_NUMBER] == 1
    assert hattrs[names.ATTR_HEDGE_NAME] == "h"
    assert hattrs[names.ATTR_OUTCOME] == names.OUTCOME_SUCCESS
    cattrs = dict(call_span.attributes or {})
    assert cattrs[names.ATTR_HEDGE_WINNER] == 1
    assert cattrs[names.ATTR_HEDGES] == 1
    counted = [(a[names.ATTR_OUTCOME], v) for a, v in otel.points(names.METRIC_HEDGES)]
    assert counted == [(names.OUTCOME_SUCCESS, 1)]


async def test_a_losing_hedge_is_cancelled_not_failed(otel: Otel) -> None:
    n = 0

    async def call() -> str:
        nonlocal n
        n += 1
        mine = n
        await asyncio.sleep(0.05 if mine == 1 else 10)
        return f"attempt {mine}"

    assert await Pipeline(Hedge(0.01, safe=True), name="f2").call(call) == "attempt 1"
    hedge = otel.spans()["hedge f2"]
    assert dict(hedge.attributes or {})[names.ATTR_OUTCOME] == names.OUTCOME_CANCELLED
    assert hedge.status.status_code is StatusCode.UNSET  # a lost race is no error
    assert dict(otel.spans()["f2"].attributes or {})[names.ATTR_HEDGE_WINNER] == 0
