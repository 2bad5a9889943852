"""OpenTelemetry: call and attempt spans, events, metrics, the aiohttp hook, OTLP on the wire.

Every test injects its own SDK providers with :func:`resilience.telemetry.configure` (the
library never touches the global SDK) and restores the globals afterwards. Tests that need a
process with *no* SDK at all run in a subprocess.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import resilience
from resilience import Pipeline, Retryable, SlidingWindowLimiter, telemetry
from resilience.backoff import constant
from resilience.telemetry import _provider, _spans, names
from resilience.telemetry.aiohttp import make_request_hook, request_hook

ROOT = Path(__file__).resolve().parent.parent

try:  # the stable HTTP attribute names (http.response.status_code ...) on CLIENT spans
    from opentelemetry.instrumentation._semconv import _StabilityMode

    _HTTP_MODE: dict[str, Any] = {"sem_conv_opt_in_mode": _StabilityMode.HTTP}
except ImportError:  # pragma: no cover
    _HTTP_MODE = {}


@dataclass
class Otel:
    tp: TracerProvider
    spans: InMemorySpanExporter
    mp: MeterProvider
    reader: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "resilience"
                assert sm.scope.version == resilience.__version__
                for m in sm.metrics:
                    out[m.name] = m
        return out


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    telemetry.configure(tracer_provider=tp, meter_provider=mp)
    try:
        yield Otel(tp, spans, mp, reader)
    finally:
        telemetry.configure()
        tp.shutdown()
        mp.shutdown()


# ------------------------------------------------------------------------------------------
# A local upstream: 503, then a dropped connection, then 200.
# ------------------------------------------------------------------------------------------


class Upstream503(Retryable):
    """The test's own classification of a 503 answer (carries the status and a hint)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.retry_after = retry_after


@pytest.fixture
async def flaky_url() -> AsyncIterator[str]:
    """POST /flaky answers 503, then drops the connection, then 200 (per fresh counter)."""
    hits = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal hits
        hits += 1
        await request.read()
        if hits == 1:
            return web.Response(status=503, text="busy")
        if hits == 2:
            assert request.transport is not None
            request.transport.abort()  # the client sees ServerDisconnectedError
            return web.Response(text="never sent")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/flaky", flaky)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/flaky"
    finally:
        await runner.cleanup()


def _retry() -> Any:
    """The retry policy under test: 3 attempts, 10 ms constant backoff."""
    return resilience.Retry(
        3,
        backoff=constant(0.01),
        retry_on=(Upstream503, aiohttp.ServerDisconnectedError),
    )


async def _retried_post(url: str, tp: TracerProvider) -> str:
    """One pipeline call that fails twice (503, disconnect) and succeeds on the 3rd attempt."""
    trace_config = create_trace_config(request_hook=request_hook, tracer_provider=tp, **_HTTP_MODE)
    async with aiohttp.ClientSession(trace_configs=[trace_config]) as session:

        @Pipeline(_retry(), name="payments.charge")
        async def charge() -> str:
            async with session.post(url, data=b"{}") as resp:
                if resp.status == 503:
                    raise Upstream503(resp.status, retry_after=0.05)
                resp.raise_for_status()
                return await resp.text()

        return await charge()


def _by_parent(spans: list[Any], parent_id: int) -> list[Any]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent_id]


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    kids = _by_parent(spans, parent.context.span_id)
    return sorted(kids, key=lambda s: s.start_time or 0)


def check_retried_trace(spans: list[ReadableSpan]) -> None:
    """The acceptance shape of issue 5 (shared with the OTLP wire test)."""
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["payments.charge"]
    call = roots[0]
    assert call.kind is SpanKind.INTERNAL
    assert call.status.status_code is StatusCode.UNSET  # succeeded after retries: not an error
    assert call.attributes is not None
    assert call.attributes[names.ATTR_OUTCOME] == "success"
    assert call.attributes[names.ATTR_RETRY_ATTEMPTS] == 3
    assert names.ATTR_ERROR_TYPE not in call.attributes

    attempts = _children(spans, call)
    assert [s.name for s in attempts] == ["attempt payments.charge"] * 3
    assert [s.attributes[names.ATTR_RETRY_ATTEMPT] for s in attempts] == [1, 2, 3]  # type: ignore[index]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [(s.attributes or {}).get(names.ATTR_ERROR_TYPE) for s in attempts] == [
        "503",
        "aiohttp.client_exceptions.ServerDisconnectedError",
        None,
    ]
    assert all(s.kind is SpanKind.INTERNAL for s in attempts)
    assert all(not s.events for s in attempts)  # retried errors are handled: no exception event

    resend = []
    for attempt in attempts:
        clients = _children(spans, attempt)
        assert len(clients) == 1, f"one CLIENT span per attempt, got {clients}"
        assert clients[0].kind is SpanKind.CLIENT
        assert clients[0].name == "POST"
        resend.append((clients[0].attributes or {}).get(names.ATTR_HTTP_REQUEST_RESEND_COUNT))
    assert resend == [None, 1, 2]
    assert len(spans) == 7  # 1 call + 3 attempts + 3 CLIENT spans, nothing else

    events = [e for e in call.events if e.name == names.EVENT_RETRY_SCHEDULED]
    assert len(events) == 2
    first, second = (dict(e.attributes or {}) for e in events)
    assert first[names.ATTR_RETRY_ATTEMPT] == 1
    assert first[names.ATTR_ERROR_TYPE] == "503"
    assert first[names.ATTR_RETRY_DELAY_SOURCE] == "retry_after"
    assert first[names.ATTR_RETRY_DELAY] == pytest.approx(0.05)  # max(backoff 0.01, hint 0.05)
    assert second[names.ATTR_RETRY_ATTEMPT] == 2
    assert second[names.ATTR_ERROR_TYPE] == "aiohttp.client_exceptions.ServerDisconnectedError"
    assert second[names.ATTR_RETRY_DELAY_SOURCE] == "backoff"
    assert second[names.ATTR_RETRY_DELAY] == pytest.approx(0.01)
    # Each event sits between the attempt that failed and the next one.
    for ev, before, after in zip(events, attempts, attempts[1:], strict=False):
        assert before.end_time is not None
        assert after.start_time is not None
        assert before.end_time <= ev.timestamp <= after.start_time


async def test_retried_call_yields_call_attempt_and_client_spans(otel: Otel, flaky_url: str):
    assert await _retried_post(flaky_url, otel.tp) == "ok"
    check_retried_trace(otel.finished())


# ------------------------------------------------------------------------------------------
# Status rules without a retry policy.
# ------------------------------------------------------------------------------------------


async def test_failed_call_is_an_error_with_an_exception_event(otel: Otel):
    @Pipeline(name="op.fail")
    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await fail()
    spans = otel.finished()
    call = next(s for s in spans if s.parent is None)
    (attempt,) = _children(spans, call)
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes[names.ATTR_ERROR_TYPE] == "KeyError"
    assert call.attributes[names.ATTR_OUTCOME] == "failure"
    assert [e.name for e in call.events] == ["exception"]
    assert attempt.status.status_code is StatusCode.ERROR
    assert (attempt.attributes or {})[names.ATTR_ERROR_TYPE] == "KeyError"
    assert not attempt.events
    point = otel.metrics()[names.METRIC_CALL_DURATION].data.data_points[0]
    assert dict(point.attributes) == {
        names.ATTR_OPERATION_NAME: "op.fail",
        names.ATTR_PIPELINE_NAME: "op.fail",
        names.ATTR_OUTCOME: "failure",
        names.ATTR_ERROR_TYPE: "KeyError",
    }


async def test_cancelled_call_is_not_an_error(otel: Otel):
    started = asyncio.Event()

    @Pipeline(name="op.slow")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    task: asyncio.Task[None] = asyncio.ensure_future(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spans = otel.finished()
    assert len(spans) == 2
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    assert all(names.ATTR_ERROR_TYPE not in (s.attributes or {}) for s in spans)
    call = next(s for s in spans if s.parent is None)
    assert (call.attributes or {})[names.ATTR_OUTCOME] == "cancelled"
    assert not call.events


async def test_spans_nest_under_the_callers_span_and_attempt_is_current(otel: Otel):
    tracer = otel.tp.get_tracer("test")
    seen: list[int] = []

    @Pipeline()
    async def work() -> None:
        seen.append(telemetry.current_attempt())

    with tracer.start_as_current_span("outer") as outer:
        await work()
    assert seen == [1]
    assert telemetry.current_attempt() == 0
    spans = otel.finished()
    call = next(s for s in spans if s.name.endswith("work") and not s.name.startswith("attempt"))
    assert call.parent is not None
    assert call.parent.span_id == outer.get_span_context().span_id
    # default operation name: the function's qualified name
    assert call.name == work.__qualname__


def test_error_type_values():
    assert telemetry.error_type(TimeoutError()) == "TimeoutError"
    assert telemetry.error_type(aiohttp.ServerDisconnectedError()) == (
        "aiohttp.client_exceptions.ServerDisconnectedError"
    )
    assert telemetry.error_type(resilience.CircuitOpen("b", 1.0)) == names.ERROR_TYPE_CIRCUIT_OPEN
    assert telemetry.error_type(resilience.RateLimited("l", 1.0)) == names.ERROR_TYPE_RATE_LIMITED
    assert telemetry.error_type(resilience.StoreUnavailable()) == (
        names.ERROR_TYPE_STORE_UNAVAILABLE
    )
    assert telemetry.error_type(Upstream503(503, None)) == "503"
    weird = ValueError()
    weird.status = "503"  # type: ignore[attr-defined]  # not an int: ignored
    assert telemetry.error_type(weird) == "ValueError"


# ------------------------------------------------------------------------------------------
# Limiter events and every metric.
# ------------------------------------------------------------------------------------------


async def test_limiter_wait_and_rejection_events(otel: Otel):
    store = resilience.MemoryStore()
    # 0.5 s window: the second call waits 0.5 s minus the (scheduler-dependent) time between
    # the two calls, so the bounds below hold unless the machine stalls for 0.25 s.
    limiter = SlidingWindowLimiter(1, 0.5, store=store, name="quota", guard=0)

    @Pipeline(limiter, name="op.limited")
    async def limited() -> None:
        return None

    await limited()  # admitted at once: no event
    await limited()  # waits ~0.5 s for the slot
    strict = SlidingWindowLimiter(1, 60, store=store, name="strict", guard=0, timeout=0)

    @Pipeline(strict, name="op.strict")
    async def refused() -> None:
        return None

    await refused()
    with pytest.raises(resilience.RateLimited):
        await refused()

    spans = otel.finished()
    throttled = [
        (s.name, dict(e.attributes or {}))
        for s in spans
        for e in s.events
        if e.name == names.EVENT_RATE_LIMITER_THROTTLED
    ]
    assert len(throttled) == 2
    (span1, waited), (span2, rejected) = throttled
    # Without a Retry the whole chain is one attempt: the limiter runs inside the attempt span.
    assert span1 == "attempt op.limited"
    assert waited[names.ATTR_RATE_LIMITER_NAME] == "quota"
    assert waited[names.ATTR_RATE_LIMITER_RESULT] == "acquired"
    wait_time = waited[names.ATTR_RATE_LIMITER_WAIT_TIME]
    assert isinstance(wait_time, float)
    assert 0.25 < wait_time <= 0.5
    assert span2 == "attempt op.strict"
    assert rejected[names.ATTR_RATE_LIMITER_RESULT] == "rejected"
    assert rejected[names.ATTR_RATE_LIMITER_WAIT_TIME] == 0.0
    call = next(s for s in spans if s.name == "op.strict" and s.status.status_code.name == "ERROR")
    assert (call.attributes or {})[names.ATTR_OUTCOME] == "rate_limited"
    assert (call.attributes or {})[names.ATTR_ERROR_TYPE] == names.ERROR_TYPE_RATE_LIMITED


#: The documented instruments: name -> (unit, attribute keys that may appear).
DOCUMENTED_METRICS: dict[str, tuple[str, set[str]]] = {
    names.METRIC_CALL_DURATION: (
        "s",
        {
            names.ATTR_OPERATION_NAME,
            names.ATTR_PIPELINE_NAME,
            names.ATTR_OUTCOME,
            names.ATTR_ERROR_TYPE,
        },
    ),
    names.METRIC_RETRY_ATTEMPT_DURATION: (
        "s",
        {
            names.ATTR_OPERATION_NAME,
            names.ATTR_PIPELINE_NAME,
            names.ATTR_RETRY_ATTEMPT,
            names.ATTR_ERROR_TYPE,
        },
    ),
    names.METRIC_RETRIES: (
        "{retry}",
        {
            names.ATTR_OPERATION_NAME,
            names.ATTR_PIPELINE_NAME,
            names.ATTR_RETRY_DELAY_SOURCE,
            names.ATTR_ERROR_TYPE,
        },
    ),
    names.METRIC_RETRY_DELAY: ("s", {names.ATTR_OPERATION_NAME, names.ATTR_RETRY_DELAY_SOURCE}),
    names.METRIC_RATE_LIMITER_REQUESTS: (
        "{request}",
        {names.ATTR_RATE_LIMITER_NAME, names.ATTR_RATE_LIMITER_RESULT},
    ),
    names.METRIC_RATE_LIMITER_ACQUIRE_DURATION: (
        "s",
        {names.ATTR_RATE_LIMITER_NAME, names.ATTR_RATE_LIMITER_RESULT},
    ),
    names.METRIC_CIRCUIT_BREAKER_STATE: (
        "1",
        {names.ATTR_CIRCUIT_BREAKER_NAME, names.ATTR_CIRCUIT_BREAKER_STATE},
    ),
    names.METRIC_CIRCUIT_BREAKER_TRANSITIONS: (
        "{transition}",
        {
            names.ATTR_CIRCUIT_BREAKER_NAME,
            names.ATTR_CIRCUIT_BREAKER_STATE,
            names.ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE,
        },
    ),
    names.METRIC_CIRCUIT_BREAKER_CALLS: (
        "{call}",
        {names.ATTR_CIRCUIT_BREAKER_NAME, names.ATTR_CIRCUIT_BREAKER_RESULT},
    ),
    names.METRIC_STORE_DEGRADED: ("1", {names.ATTR_STORE_NAME}),
}


def _points(metric: Any) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for p in metric.data.data_points:
        value = getattr(p, "value", None)
        if value is None:
            value = (p.count, p.sum)
        out.append((dict(p.attributes), value))
    return out


async def test_metrics_have_documented_names_units_and_attributes(otel: Otel):
    store = resilience.MemoryStore()
    limiter = SlidingWindowLimiter(1, 0.5, store=store, name="quota", guard=0)
    calls = 0

    class FlakyOnce(Retryable):
        pass

    @Pipeline(limiter, name="op.metrics")
    async def op() -> int:
        nonlocal calls
        calls += 1
        return calls

    await op()
    await op()  # waits for the limiter
    # Retry events, reported the way the Retry policy reports them.
    ctx = resilience.CallContext("op.metrics")
    ctx.attempt = 1

    async def failing() -> None:
        raise FlakyOnce()

    async def nothing() -> None:
        return None

    async def one_call() -> None:
        async def attempts() -> None:
            with pytest.raises(FlakyOnce):
                await telemetry.instrument_attempt(failing, ctx)
            telemetry.retry_scheduled(
                ctx, policy="", attempt=1, delay=0.25, source="backoff", error=FlakyOnce()
            )
            ctx.attempt = 2
            await telemetry.instrument_attempt(nothing, ctx)

        await telemetry.instrument_call(attempts, ctx)

    await one_call()
    telemetry.breaker_call(ctx, breaker="upstream", outcome="failure", state="closed")
    telemetry.breaker_state_change(ctx, breaker="upstream", old="closed", new="open")
    telemetry.breaker_call(ctx, breaker="upstream", outcome="rejected", state="open")
    telemetry.store_degraded(store="redis", degraded=True, reason="timeout talking to 127.0.0.1")

    metrics = otel.metrics()
    assert set(metrics) == set(DOCUMENTED_METRICS)
    for name, (unit, allowed) in DOCUMENTED_METRICS.items():
        m = metrics[name]
        assert m.unit == unit, name
        assert m.description, name
        for attrs, _ in _points(m):
            assert set(attrs) <= allowed, (name, attrs)
            # low cardinality: no value looks like a URL or a key
            assert not any("://" in str(v) or "127.0.0.1" in str(v) for v in attrs.values())

    call_pts = sorted(
        (sorted(a.items()), v[0]) for a, v in _points(metrics[names.METRIC_CALL_DURATION])
    )
    ok = {names.ATTR_OPERATION_NAME: "op.metrics", names.ATTR_OUTCOME: "success"}
    assert call_pts == [
        (sorted(ok.items()), 1),  # the direct instrument_call: no pipeline name
        (sorted({**ok, names.ATTR_PIPELINE_NAME: "op.metrics"}.items()), 2),
    ]
    flaky = telemetry.error_type(FlakyOnce())
    assert flaky.endswith("FlakyOnce")
    attempts = sorted(
        (a[names.ATTR_RETRY_ATTEMPT], a.get(names.ATTR_ERROR_TYPE, ""), v[0])
        for a, v in _points(metrics[names.METRIC_RETRY_ATTEMPT_DURATION])
    )
    assert attempts == [(1, "", 2), (1, flaky, 1), (2, "", 1)]
    assert _points(metrics[names.METRIC_RETRIES]) == [
        (
            {
                names.ATTR_OPERATION_NAME: "op.metrics",
                names.ATTR_RETRY_DELAY_SOURCE: "backoff",
                names.ATTR_ERROR_TYPE: telemetry.error_type(FlakyOnce()),
            },
            1,
        )
    ]
    ((_, (delay_count, delay_sum)),) = _points(metrics[names.METRIC_RETRY_DELAY])
    assert delay_count == 1
    assert delay_sum == pytest.approx(0.25)
    assert _points(metrics[names.METRIC_RATE_LIMITER_REQUESTS]) == [
        ({names.ATTR_RATE_LIMITER_NAME: "quota", names.ATTR_RATE_LIMITER_RESULT: "acquired"}, 2)
    ]
    ((_, (acq_count, acq_sum)),) = _points(metrics[names.METRIC_RATE_LIMITER_ACQUIRE_DURATION])
    assert acq_count == 2
    assert acq_sum > 0.25  # the second call waited for the slot (0.5 s minus scheduling)
    state = {
        a[names.ATTR_CIRCUIT_BREAKER_STATE]: v
        for a, v in _points(metrics[names.METRIC_CIRCUIT_BREAKER_STATE])
    }
    assert state == {"closed": 0, "open": 1, "half_open": 0}
    assert _points(metrics[names.METRIC_CIRCUIT_BREAKER_TRANSITIONS]) == [
        (
            {
                names.ATTR_CIRCUIT_BREAKER_NAME: "upstream",
                names.ATTR_CIRCUIT_BREAKER_STATE: "open",
                names.ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE: "closed",
            },
            1,
        )
    ]
    results = {
        a[names.ATTR_CIRCUIT_BREAKER_RESULT]: v
        for a, v in _points(metrics[names.METRIC_CIRCUIT_BREAKER_CALLS])
    }
    assert results == {"failure": 1, "rejected": 1}
    assert _points(metrics[names.METRIC_STORE_DEGRADED]) == [({names.ATTR_STORE_NAME: "redis"}, 1)]


def test_docs_list_every_name():
    doc = (ROOT / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"`([^`\s]+)`", doc))
    missing = sorted(
        value
        for key, value in vars(names).items()
        if key.isupper()
        and isinstance(value, str)
        and key not in ("ATTEMPT_SPAN_PREFIX", "HEDGE_SPAN_PREFIX")
        and value not in documented
    )
    assert not missing, f"docs/observability.md does not list: {missing}"
    assert "`attempt <operation>`" in doc
    assert "`hedge <operation>`" in doc


# ------------------------------------------------------------------------------------------
# The aiohttp hook.
# ------------------------------------------------------------------------------------------


class _FakeSpan:
    def __init__(self, recording: bool = True) -> None:
        self.attrs: dict[str, Any] = {}
        self.recording = recording

    def is_recording(self) -> bool:
        return self.recording

    def set_attribute(self, key: str, value: Any) -> None:
        self.attrs[key] = value


def test_request_hook_sets_resend_count_from_the_attempt_only_when_retried():
    seen: list[Any] = []
    hook = make_request_hook(lambda span, params: seen.append(params))
    token = _spans.ATTEMPT.set(1)
    try:
        first = _FakeSpan()
        hook(first, "p1")
        assert first.attrs == {}
    finally:
        _spans.ATTEMPT.reset(token)
    token = _spans.ATTEMPT.set(3)
    try:
        third = _FakeSpan()
        hook(third, "p3")
        assert third.attrs == {names.ATTR_HTTP_REQUEST_RESEND_COUNT: 2}
        idle = _FakeSpan(recording=False)
        request_hook(idle, None)
        assert idle.attrs == {}
    finally:
        _spans.ATTEMPT.reset(token)
    outside = _FakeSpan()
    request_hook(outside, None)
    assert outside.attrs == {}
    assert seen == ["p1", "p3"]
    assert make_request_hook() is request_hook


# ------------------------------------------------------------------------------------------
# OTLP over the wire, through setup_telemetry and the standard OTEL_* variables.
# ------------------------------------------------------------------------------------------


async def test_otlp_http_export_reaches_a_receiver_with_the_same_tree(
    flaky_url: str, monkeypatch: pytest.MonkeyPatch
):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    from resilience.telemetry.setup import setup_telemetry

    received: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        received.append(msg)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "wire-test")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    local = InMemorySpanExporter()
    handle = setup_telemetry(
        "ignored-because-env-wins",
        span_exporter=local,
        instrument_aiohttp=False,
        set_global=False,
    )
    try:
        assert telemetry.enabled()
        assert await _retried_post(flaky_url, handle.tracer_provider) == "ok"
        # The OTLP exporter is synchronous (it runs in the batch processor's thread); the
        # receiver runs on this loop, so flush from a worker thread.
        assert await asyncio.to_thread(handle.force_flush, 10_000)
    finally:
        await asyncio.to_thread(handle.shutdown)
        await runner.cleanup()
    assert not telemetry.enabled()  # shutdown() gave the library back to the global providers

    spans: list[Any] = []
    for req in received:
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}.get(
                "service.name"
            )
            assert service == "wire-test"
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append((ss.scope.name, s))
    assert len(spans) == 7
    local_spans = list(local.get_finished_spans())
    check_retried_trace(local_spans)

    # Same tree on the wire: ids, parents, names, kinds, statuses and key attributes.
    def wire_key(s: Any) -> tuple[Any, ...]:
        attrs = {a.key: a.value for a in s.attributes}
        resend = attrs.get(names.ATTR_HTTP_REQUEST_RESEND_COUNT)
        etype = attrs.get(names.ATTR_ERROR_TYPE)
        return (
            int.from_bytes(s.span_id, "big"),
            int.from_bytes(s.parent_span_id, "big") if s.parent_span_id else None,
            s.name,
            s.kind,
            s.status.code,
            resend.int_value if resend is not None else None,
            etype.string_value if etype is not None else None,
        )

    def local_key(s: ReadableSpan) -> tuple[Any, ...]:
        attrs = dict(s.attributes or {})
        if s.kind is SpanKind.CLIENT:  # ours sets no error.type there; the instrumentation may
            etype = attrs.get(names.ATTR_ERROR_TYPE)
        else:
            etype = attrs.get(names.ATTR_ERROR_TYPE)
        return (
            s.context.span_id,
            s.parent.span_id if s.parent else None,
            s.name,
            s.kind.value + 1,  # OTLP enum: INTERNAL=1, SERVER=2, CLIENT=3
            s.status.status_code.value,
            attrs.get(names.ATTR_HTTP_REQUEST_RESEND_COUNT),
            etype,
        )

    assert sorted(wire_key(s) for _, s in spans) == sorted(local_key(s) for s in local_spans)
    scopes = {scope for scope, _ in spans}
    assert "resilience" in scopes
    call = next(s for _, s in spans if not s.parent_span_id)
    events = [e.name for e in call.events]
    assert events == [names.EVENT_RETRY_SCHEDULED] * 2


# ------------------------------------------------------------------------------------------
# Telemetry absent: no SDK objects, pass-through hooks; an SDK installed later is picked up.
# ------------------------------------------------------------------------------------------

ABSENT = textwrap.dedent(
    """
    import asyncio, gc, sys
    import resilience
    from resilience import Pipeline, SlidingWindowLimiter, telemetry
    from opentelemetry import trace

    seen = {}

    class Spy:
        async def execute(self, call, ctx):
            seen["span"] = ctx.span
            seen["attempt"] = telemetry.current_attempt()
            return await call()

    lim = SlidingWindowLimiter(5, 1.0, name="q")

    @Pipeline(Spy(), lim, name="absent")
    async def f(x):
        return x * 2

    async def boom():
        raise KeyError("k")

    async def main():
        assert await f(21) == 42
        ctx = resilience.CallContext("direct")
        try:
            await telemetry.instrument_call(boom, ctx)
        except KeyError as e:
            assert e.args == ("k",)
        assert ctx.span is None
        telemetry.retry_scheduled(ctx, policy="", attempt=1, delay=0.1, source="backoff",
                                  error=None)
        telemetry.breaker_state_change(ctx, breaker="b", old="closed", new="open")
        telemetry.store_degraded(store="s", degraded=True)

    asyncio.run(main())
    assert not telemetry.enabled()
    assert seen == {"span": None, "attempt": 0}, seen
    from resilience.telemetry import _provider
    assert _provider._STATE.tracer is None and _provider._STATE.instruments is None

    # (redis-py 8 imports parts of the SDK when it is installed; importing is not creating.)
    from opentelemetry.sdk.metrics import Meter as SdkMeter, MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import ReadableSpan, Tracer as SdkTracer
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    kinds = (SdkTracerProvider, SdkTracer, ReadableSpan, SdkMeterProvider, SdkMeter)

    def sdk_objects():
        return [type(o).__qualname__ for o in gc.get_objects() if isinstance(o, kinds)]

    assert sdk_objects() == [], sdk_objects()[:10]

    # The application installs an SDK later: the cached decision is invalidated.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tp)
    assert asyncio.run(f(1)) == 2
    assert telemetry.enabled()
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["absent", "attempt absent"]
    print("OK")
    """
)


# opentelemetry-api without the private names resilience.telemetry reads when they exist (as a
# future API version might be): resilience imports copies of the modules without them, while the
# API keeps working (its functions use their own module's globals).
HIDE_PRIVATE = textwrap.dedent(
    """
    import sys, types
    import opentelemetry
    import opentelemetry.metrics
    import opentelemetry.metrics._internal
    import opentelemetry.trace

    def without(mod, *hidden):
        copy = types.ModuleType(mod.__name__)
        copy.__dict__.update({k: v for k, v in vars(mod).items() if k not in hidden})
        return copy

    api_trace = without(opentelemetry.trace, "_TRACER_PROVIDER")
    opentelemetry.trace = sys.modules["opentelemetry.trace"] = api_trace
    internal = without(opentelemetry.metrics._internal, "_METER_PROVIDER", "_ProxyMeter")
    opentelemetry.metrics._internal = sys.modules["opentelemetry.metrics._internal"] = internal
    """
)


@pytest.mark.parametrize("private_names", ["present", "hidden"])
def test_telemetry_absent_creates_no_sdk_objects_and_passes_through(private_names: str):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    script = ABSENT + 'print("private globals", _provider.reads_private_globals())\n'
    if private_names == "hidden":
        script = HIDE_PRIVATE + script
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "OK"
    # Without the private names, the public getters are used (and everything above held).
    assert lines[-1] == f"private globals {private_names == 'present'}"


def _without(mod: Any, *hidden: str) -> Any:
    """A copy of module ``mod`` without the attributes ``hidden``."""
    import types

    copy = types.ModuleType(mod.__name__)
    copy.__dict__.update({k: v for k, v in vars(mod).items() if k not in hidden})
    return copy


@pytest.fixture
def private_names_hidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """resilience.telemetry loses sight of opentelemetry-api's private names, mid-run."""
    import opentelemetry.metrics._internal as api_metrics_internal
    import opentelemetry.trace as api_trace

    trace_copy = _without(api_trace, "_TRACER_PROVIDER")
    internal_copy = _without(api_metrics_internal, "_METER_PROVIDER", "_ProxyMeter")
    monkeypatch.setattr(_provider, "_trace", trace_copy)
    monkeypatch.setattr(_provider, "_metrics_internal", internal_copy)
    # Where the provider globals are read while the private names were visible.
    assert _provider.reads_private_globals()
    monkeypatch.setattr(_provider, "_tp_globals", trace_copy)
    monkeypatch.setattr(_provider, "_mp_globals", internal_copy)
    yield
    monkeypatch.undo()
    telemetry.configure()  # back to the private names, now visible again


async def test_telemetry_works_without_the_private_names(otel: Otel, request: Any) -> None:
    class Flaky(Retryable):
        pass

    left = [1]

    @Pipeline(resilience.Retry(2, backoff=constant(0), retry_on=Flaky), name="hidden")
    async def work() -> str:
        if left[0]:
            left[0] -= 1
            raise Flaky()
        return "ok"

    assert telemetry.enabled()  # resolved the usual way first
    request.getfixturevalue("private_names_hidden")
    assert await work() == "ok"
    assert not _provider.reads_private_globals()  # switched to the public getters
    assert telemetry.enabled()
    spans = otel.finished()
    assert sorted(s.name for s in spans) == ["attempt hidden", "attempt hidden", "hidden"]
    assert _points(otel.metrics()[names.METRIC_RETRIES])[0][1] == 1
    telemetry.configure(otel.tp, otel.mp)  # a new resolution without the private names
    assert not _provider.reads_private_globals()
    left[0] = 1
    assert await work() == "ok"
    assert len(otel.finished()) == 6


def test_api_meters_record_nothing_without_the_private_names(
    otel: Otel, private_names_hidden: None
) -> None:
    from opentelemetry.metrics import NoOpMeter
    from opentelemetry.metrics import _internal as api_metrics_internal

    proxy = api_metrics_internal._ProxyMeterProvider().get_meter("x")
    assert _provider.records_nothing(proxy)
    assert _provider.records_nothing(NoOpMeter("x"))
    assert not _provider.records_nothing(otel.mp.get_meter("x"))


def test_library_imports_the_api_only():
    """Only resilience/telemetry touches OpenTelemetry, and only its setup module the SDK."""
    offenders = []
    for path in (ROOT / "resilience").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for mod in mods:
                if not mod.startswith("opentelemetry"):
                    continue
                in_telemetry = rel.startswith("resilience/telemetry/")
                sdk_ok = rel in ("resilience/telemetry/setup.py",) or rel.startswith(
                    "resilience/demo/"
                )
                if mod.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
                    if not sdk_ok:
                        offenders.append((rel, mod))
                elif not (in_telemetry or sdk_ok):
                    offenders.append((rel, mod))
    assert not offenders, offenders
    init = (ROOT / "resilience" / "__init__.py").read_text()
    assert "telemetry.setup" not in init


async def test_call_outcome_tells_why_the_retrier_gave_up(otel: Otel):
    class Boom(Retryable):
        pass

    @Pipeline(resilience.Retry(2, backoff=constant(0), retry_on=Boom), name="op.exhausted")
    async def always() -> None:
        raise Boom()

    seq = iter([Boom(), ValueError("fatal")])

    @Pipeline(resilience.Retry(3, backoff=constant(0), retry_on=Boom), name="op.fatal")
    async def then_fatal() -> None:
        raise next(seq)

    with pytest.raises(Boom):
        await always()
    with pytest.raises(ValueError, match="fatal"):
        await then_fatal()
    calls = {s.name: s for s in otel.finished() if s.parent is None}
    exhausted = calls["op.exhausted"].attributes or {}
    fatal = calls["op.fatal"].attributes or {}
    assert exhausted[names.ATTR_OUTCOME] == "exhausted"
    assert exhausted[names.ATTR_RETRY_ATTEMPTS] == 2
    assert fatal[names.ATTR_OUTCOME] == "non_retryable"
    assert fatal[names.ATTR_ERROR_TYPE] == "ValueError"
    assert fatal[names.ATTR_RETRY_ATTEMPTS] == 2
    assert all(c.status.status_code is StatusCode.ERROR for c in calls.values())


def _gives_up_for(reason: str) -> Any:
    """A pipeline whose retrier gives up on its first failure for ``reason``."""
    if reason == "deadline":  # the 10 s backoff would end past the 1 s deadline
        retry = resilience.Retry(3, backoff=constant(10), deadline=1.0, retry_on=_Boom)
    elif reason == "budget":  # no ratio, no floor: every retry is refused
        budget = resilience.RetryBudget(0, 0, store=resilience.MemoryStore(), name="empty")
        retry = resilience.Retry(3, backoff=constant(0), budget=budget, retry_on=_Boom)
    else:  # "attempts"
        retry = resilience.Retry(1, retry_on=_Boom)

    @Pipeline(retry, name=f"op.{reason}")
    async def fails() -> None:
        raise _Boom()

    return fails


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("attempts", names.OUTCOME_EXHAUSTED),
        ("deadline", names.OUTCOME_DEADLINE_EXCEEDED),
        ("budget", names.OUTCOME_BUDGET_EXHAUSTED),
    ],
)
async def test_each_give_up_reason_sets_its_call_outcome(
    otel: Otel, reason: str, outcome: str
) -> None:
    with pytest.raises(_Boom):
        await _gives_up_for(reason)()
    (call,) = [s for s in otel.finished() if s.parent is None]
    assert (call.attributes or {})[names.ATTR_OUTCOME] == outcome


async def test_retry_reports_a_typed_give_up_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []

    def exhausted(ctx: Any, **kw: Any) -> None:
        reported.append(kw["reason"])

    monkeypatch.setattr(telemetry, "retry_exhausted", exhausted)
    for reason in ("attempts", "deadline", "budget"):
        with pytest.raises(_Boom):
            await _gives_up_for(reason)()
    assert reported == [
        telemetry.GiveUpReason.ATTEMPTS,
        telemetry.GiveUpReason.DEADLINE,
        telemetry.GiveUpReason.BUDGET,
    ]
    assert all(type(r) is telemetry.GiveUpReason for r in reported)


def test_every_give_up_reason_maps_to_an_outcome_without_substring_matching() -> None:
    from resilience.telemetry._outcomes import GAVE_UP_OUTCOME, call_outcome

    GiveUpReason = telemetry.GiveUpReason
    assert set(GAVE_UP_OUTCOME) == set(GiveUpReason)
    assert {call_outcome(ValueError(), r) for r in GiveUpReason} == {
        names.OUTCOME_EXHAUSTED,
        names.OUTCOME_DEADLINE_EXCEEDED,
        names.OUTCOME_BUDGET_EXHAUSTED,
        names.OUTCOME_CIRCUIT_OPEN,
        names.OUTCOME_NON_RETRYABLE,
    }
    # The values are the enum's: words that merely contain "budget" or "deadline" are not.
    assert call_outcome(ValueError(), "budget") == names.OUTCOME_BUDGET_EXHAUSTED  # type: ignore[arg-type]
    assert call_outcome(ValueError(), "no budget left") == names.OUTCOME_EXHAUSTED  # type: ignore[arg-type]
    assert call_outcome(ValueError(), None) == names.OUTCOME_FAILURE
    assert str(GiveUpReason.DEADLINE) == f"{GiveUpReason.DEADLINE}" == "deadline"


SETUP_GLOBAL = textwrap.dedent(
    """
    import asyncio, os
    import aiohttp
    from aiohttp import web
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import resilience
    from resilience import Pipeline, Retryable, telemetry
    from resilience.backoff import constant
    from resilience.telemetry.setup import setup_telemetry

    os.environ["OTEL_TRACES_EXPORTER"] = "none"  # no OTLP export in this test
    spans = InMemorySpanExporter()
    handle = setup_telemetry("app", span_exporter=spans)
    assert setup_telemetry("app") is handle  # idempotent per process
    assert trace.get_tracer_provider() is handle.tracer_provider
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http"

    class Busy(Retryable):
        status = 503

    async def main():
        hits = 0

        async def h(request):
            nonlocal hits
            hits += 1
            return web.Response(status=503 if hits == 1 else 200, text="x")

        app = web.Application()
        app.router.add_get("/", h)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        async with aiohttp.ClientSession() as session:  # instrumented by setup_telemetry

            @Pipeline(resilience.Retry(2, backoff=constant(0), retry_on=Busy), name="get")
            async def get():
                async with session.get(url) as resp:
                    if resp.status == 503:
                        raise Busy()
                    return resp.status

            assert await get() == 200
        await runner.cleanup()

    asyncio.run(main())
    handle.shutdown()
    handle.shutdown()  # idempotent
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    clients = sorted(
        (s for s in by_id.values() if s.kind.name == "CLIENT"), key=lambda s: s.start_time
    )
    assert len(clients) == 2, [s.name for s in by_id.values()]
    assert [by_id[c.parent.span_id].name for c in clients] == ["attempt get"] * 2
    assert [c.attributes.get("http.request.resend_count") for c in clients] == [None, 1]
    assert clients[0].attributes["http.response.status_code"] == 503  # stable HTTP names
    print("OK")
    """
)


def test_setup_telemetry_installs_globals_and_instruments_aiohttp():
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", SETUP_GLOBAL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


async def test_degraded_store_is_visible_as_an_event_and_metrics(otel: Otel):
    # A Redis nobody listens on: the first decision fails, the store becomes degraded (a span
    # event on the call span, the gauge at 1) and the fallback ("allow") decides, counted.
    from resilience import RedisStore
    from tests.redis_servers import free_port

    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
    limiter = SlidingWindowLimiter(5, 1.0, store=store, name="down", fallback="allow")

    @Pipeline(limiter, name="degraded")
    async def work() -> int:
        return 1

    try:
        assert await work() == 1
        assert await work() == 1  # fails fast in degraded mode, still allowed
    finally:
        await store.aclose()
    # The event lands on the span current when the decision failed: here the attempt span.
    events = [
        e for s in otel.finished() for e in s.events if e.name == names.EVENT_STORE_STATE_CHANGE
    ]
    assert len(events) == 1
    attrs = dict(events[0].attributes or {})
    assert attrs[names.ATTR_STORE_DEGRADED] is True
    assert "127.0.0.1" in str(attrs[names.ATTR_STORE_NAME])
    m = otel.metrics()
    (gauge,) = _points(m[names.METRIC_STORE_DEGRADED])
    assert gauge[1] == 1
    (counter,) = _points(m[names.METRIC_STORE_FALLBACK_DECISIONS])
    assert counter[0][names.ATTR_STORE_OPERATION] == "window_acquire"
    assert counter[0][names.ATTR_STORE_FALLBACK] == "allow"
    assert counter[1] == 2


# ------------------------------------------------------------------------------------------
# Nested pipelines: one attempt span per attempt, whatever the nesting.
# ------------------------------------------------------------------------------------------


class _Pass:
    """A policy that only passes the call on."""

    async def execute(self, call: Any, ctx: Any) -> Any:
        return await call()


def _flaky_twice() -> Any:
    """An async function that fails with ``Boom`` twice, then returns ``"ok"``."""
    left = [2]

    async def fn() -> str:
        if left[0]:
            left[0] -= 1
            raise _Boom()
        return "ok"

    return fn


class _Boom(Retryable):
    pass


def _nestings() -> list[tuple[str, Any]]:
    def retry() -> Any:
        return resilience.Retry(3, backoff=constant(0), retry_on=_Boom)

    return [
        ("Pipeline(Pipeline(Retry))", lambda: Pipeline(Pipeline(retry()), name="nested")),
        (
            "Pipeline(Pipeline(Pipeline(Retry)), _Pass)",
            lambda: Pipeline(Pipeline(Pipeline(retry())), _Pass(), name="nested"),
        ),
        (
            "Pipeline(_Pass, Pipeline(Retry))",
            lambda: Pipeline(_Pass(), Pipeline(retry()), name="nested"),
        ),
    ]


@pytest.mark.parametrize("how", ["decorator", "call"])
@pytest.mark.parametrize(("label", "make"), _nestings(), ids=[n for n, _ in _nestings()])
async def test_nested_pipeline_with_retry_has_one_span_per_attempt(
    otel: Otel, how: str, label: str, make: Any
) -> None:
    pipeline = make()
    fn = _flaky_twice()
    if how == "decorator":
        assert await pipeline(fn)() == "ok"
    else:
        assert await pipeline.call(fn) == "ok"
    spans = otel.finished()
    (call,) = [s for s in spans if s.parent is None]
    attempts = _children(spans, call)
    # No spurious attempt span around the retrier: its three attempts are the call's children.
    assert [s.name for s in attempts] == ["attempt nested"] * 3, label
    assert [(s.attributes or {})[names.ATTR_RETRY_ATTEMPT] for s in attempts] == [1, 2, 3]
    assert len(spans) == 4
    assert (call.attributes or {})[names.ATTR_RETRY_ATTEMPTS] == 3


async def test_nested_pipeline_without_retry_has_one_attempt_span(otel: Otel) -> None:
    pipeline = Pipeline(Pipeline(_Pass()), _Pass(), name="plain")
    assert not pipeline.starts_attempts

    @pipeline
    async def work() -> int:
        return 1

    assert await work() == 1
    spans = otel.finished()
    (call,) = [s for s in spans if s.parent is None]
    assert [s.name for s in _children(spans, call)] == ["attempt plain"]
    assert len(spans) == 2


# ------------------------------------------------------------------------------------------
# resilience.retry.delay_source = rate_limit_header: the hint came from a RateLimit reset.
# ------------------------------------------------------------------------------------------


async def test_delay_source_tells_a_ratelimit_reset_from_retry_after(otel: Otel) -> None:
    from resilience.aiohttp import raise_for_status
    from resilience.testing import testing_mode

    answers = [
        (429, {"RateLimit": '"default";r=0;t=7'}),  # IETF RateLimit field
        (429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9"}),  # legacy field
        (503, {"Retry-After": "5", "RateLimit": '"default";r=0;t=8'}),  # Retry-After wins
        (503, {}),  # no hint: the backoff
        (200, {}),
    ]

    async def handle(request: web.Request) -> web.Response:
        status, headers = answers.pop(0)
        return web.Response(status=status, headers=headers, text="x")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        async with aiohttp.ClientSession() as session:

            @Pipeline(resilience.Retry(5, backoff=constant(0.001)), name="quota")
            async def get() -> int:
                async with session.get(url) as resp:
                    raise_for_status(resp)
                    return resp.status

            with testing_mode(attempts=5):  # hints are computed as usual, sleeps skipped
                assert await get() == 200
    finally:
        await runner.cleanup()

    call = next(s for s in otel.finished() if s.parent is None)
    events = [dict(e.attributes or {}) for e in call.events]
    assert [e[names.ATTR_RETRY_DELAY_SOURCE] for e in events] == [
        "rate_limit_header",
        "rate_limit_header",
        "retry_after",
        "backoff",
    ]
    assert [e[names.ATTR_RETRY_DELAY] for e in events] == pytest.approx([7, 9, 5, 0.001])
    retries = {
        attrs[names.ATTR_RETRY_DELAY_SOURCE]: value
        for attrs, value in _points(otel.metrics()[names.METRIC_RETRIES])
    }
    assert retries == {"rate_limit_header": 2, "retry_after": 1, "backoff": 1}


async def test_delay_source_of_a_hint_carried_by_any_exception(otel: Otel) -> None:
    from resilience.testing import testing_mode

    class Throttled(Retryable):
        def __init__(self, retry_after: float, source: str | None) -> None:
            super().__init__("throttled")
            self.retry_after = retry_after
            self.retry_after_source = source

    seq = iter([Throttled(3, "rate_limit_header"), Throttled(2, None), Throttled(4, "bogus")])

    @Pipeline(resilience.Retry(4, backoff=constant(0)), name="any")
    async def work() -> str:
        exc = next(seq, None)
        if exc is not None:
            raise exc
        return "ok"

    with testing_mode(attempts=4):
        assert await work() == "ok"
    call = next(s for s in otel.finished() if s.parent is None)
    sources = [(e.attributes or {})[names.ATTR_RETRY_DELAY_SOURCE] for e in call.events]
    # Only the documented values are ever reported: anything else counts as retry_after.
    assert sources == ["rate_limit_header", "retry_after", "retry_after"]
