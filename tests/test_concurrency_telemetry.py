"""ConcurrencyLimit's telemetry: in-flight and waiting UpDownCounters, the wait histogram,
and a span event when a call waited."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience import ConcurrencyLimit, MemoryStore, Pipeline, telemetry
from resilience.telemetry import names


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tp, meter_provider=mp)
    try:
        yield spans, reader
    finally:
        telemetry.configure()
        tp.shutdown()
        mp.shutdown()


def _metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


async def test_gauges_histogram_and_the_waited_event(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    spans, reader = otel
    lim = ConcurrencyLimit(1, store=MemoryStore(), name="gpu")
    inside = asyncio.Event()
    go = asyncio.Event()
    snapshots: list[dict[str, Any]] = []

    @Pipeline(lim, name="infer")
    async def infer() -> None:
        inside.set()
        await go.wait()

    first = asyncio.ensure_future(infer())
    await inside.wait()
    second = asyncio.ensure_future(infer())
    await asyncio.sleep(0.05)
    m = _metrics(reader)
    snapshots.append(
        {
            name: [p.value for p in m[name].data.data_points]
            for name in (names.METRIC_CONCURRENCY_IN_FLIGHT, names.METRIC_CONCURRENCY_WAITING)
        }
    )
    go.set()
    await asyncio.gather(first, second)
    assert snapshots == [
        {names.METRIC_CONCURRENCY_IN_FLIGHT: [1], names.METRIC_CONCURRENCY_WAITING: [1]}
    ]
    m = _metrics(reader)
    assert [p.value for p in m[names.METRIC_CONCURRENCY_IN_FLIGHT].data.data_points] == [0]
    assert [p.value for p in m[names.METRIC_CONCURRENCY_WAITING].data.data_points] == [0]
    hist = m[names.METRIC_CONCURRENCY_WAIT_DURATION].data.data_points
    assert sum(p.count for p in hist) == 2
    assert {p.attributes[names.ATTR_CONCURRENCY_RESULT] for p in hist} == {"acquired"}
    events = [
        e
        for s in spans.get_finished_spans()
        for e in s.events
        if e.name == names.EVENT_CONCURRENCY_WAITED
    ]
    assert len(events) == 1  # only the second call waited
    assert events[0].attributes is not None
    assert events[0].attributes[names.ATTR_CONCURRENCY_NAME] == "gpu"
    wait = events[0].attributes[names.ATTR_CONCURRENCY_WAIT_TIME]
    assert isinstance(wait, float)
    assert wait > 0.03
