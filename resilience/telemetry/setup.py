"""Set up the OpenTelemetry SDK for an application or the demo (not for libraries).

The ``resilience`` library itself depends on ``opentelemetry-api`` only and never configures
the SDK; nothing in ``resilience/__init__`` imports this module. Applications that do not run
under ``opentelemetry-instrument`` can call :func:`setup_telemetry` once at start-up::

    from resilience.telemetry.setup import setup_telemetry

    telemetry = setup_telemetry(service_name="payments-worker")
    try:
        ...  # run the application
    finally:
        telemetry.shutdown()  # flushes pending spans

It needs the ``otel`` extra (``pip install 'resilience[otel]'``: the SDK, the OTLP/HTTP
exporter and the aiohttp client instrumentation). The exporter reads the standard variables:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base URL, default ``http://localhost:4318``; ``/v1/traces``
  is appended) or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used verbatim), plus ``_HEADERS``,
  ``_TIMEOUT``, ``_COMPRESSION``;
- ``OTEL_SERVICE_NAME`` (wins over ``service_name``) and ``OTEL_RESOURCE_ATTRIBUTES``;
- ``OTEL_TRACES_EXPORTER=none`` turns the span export off, ``OTEL_METRICS_EXPORTER=otlp``
  turns the metric export on (off by default: Jaeger stores traces only).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from resilience import telemetry
from resilience.telemetry.aiohttp import request_hook

__all__ = ["TelemetryHandle", "setup_telemetry"]


class TelemetryHandle:
    """What :func:`setup_telemetry` installed; :meth:`shutdown` flushes and undoes it.

    Attributes:
        tracer_provider: the SDK tracer provider.
        meter_provider: the SDK meter provider, or ``None`` when metrics are not exported.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider | None,
        instrumentor: Any,
        injected: bool,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._instrumentor = instrumentor
        self._injected = injected
        self._closed = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now; ``True`` if the exporters confirmed in time."""
        ok = self.tracer_provider.force_flush(timeout_millis)
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> None:
        """Flush pending spans and metrics and shut the providers down (idempotent).

        Call it before the process exits: a batch processor drops what it has not exported.
        """
        if self._closed:
            return
        self._closed = True
        if self._instrumentor is not None:
            self._instrumentor.uninstrument()
        if self._injected:
            telemetry.configure()
        self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()

    def __enter__(self) -> TelemetryHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def setup_telemetry(
    service_name: str | None = None,
    *,
    otlp: bool = True,
    metrics_export: bool | None = None,
    console: bool = False,
    span_exporter: SpanExporter | None = None,
    instrument_aiohttp: bool = True,
    set_global: bool = True,
) -> TelemetryHandle:
    """Configure the OpenTelemetry SDK for this process and return a shutdown handle.

    Args:
        service_name: ``service.name`` of the resource (Jaeger's "Service"), unless
            ``OTEL_SERVICE_NAME`` is set; default ``unknown_service``.
        otlp: export spans with the OTLP/HTTP exporter (configured by the ``OTEL_EXPORTER_OTLP_*``
            variables) through a ``BatchSpanProcessor``. ``OTEL_TRACES_EXPORTER=none`` also
            turns it off.
        metrics_export: export metrics over OTLP/HTTP every 60 s
            (``OTEL_METRIC_EXPORT_INTERVAL``). Default: only when ``OTEL_METRICS_EXPORTER`` is
            ``otlp`` and ``otlp`` is true. Without it no meter provider is installed, so the
            library records no metrics at all.
        console: also print finished spans to stdout (for a quick look without a backend).
        span_exporter: an extra exporter of your own (added with a ``SimpleSpanProcessor``).
        instrument_aiohttp: when ``opentelemetry-instrumentation-aiohttp-client`` is
            installed, instrument every new ``aiohttp.ClientSession`` with
            :func:`resilience.telemetry.aiohttp.request_hook`, using the stable HTTP semantic
            conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http`` unless already set).
        set_global: install the providers as the process's global ones (the usual choice; the
            API allows it once per process). With ``False`` they are only given to
            :func:`resilience.telemetry.configure`.

    With ``set_global=True`` it is idempotent per process: while the handle of an earlier
    call is not shut down, later calls return that handle and change nothing (so a worker
    function that runs many times in one pool process can call it every time).
    """
    global _GLOBAL_HANDLE
    if set_global and _GLOBAL_HANDLE is not None and not _GLOBAL_HANDLE._closed:
        return _GLOBAL_HANDLE
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name or "unknown_service"
    resource = Resource.create({SERVICE_NAME: name})
    tracer_provider = TracerProvider(resource=resource)
    if otlp and _env("OTEL_TRACES_EXPORTER") != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if console:
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))

    if metrics_export is None:
        metrics_export = otlp and _env("OTEL_METRICS_EXPORTER") == "otlp"
    meter_provider: MeterProvider | None = None
    if metrics_export:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers: list[MetricReader] = [PeriodicExportingMetricReader(OTLPMetricExporter())]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    if set_global:
        trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
    else:
        telemetry.configure(tracer_provider=tracer_provider, meter_provider=meter_provider)

    instrumentor: Any = None
    if instrument_aiohttp:
        try:
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        except ImportError:
            pass
        else:
            os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
            instrumentor = AioHttpClientInstrumentor()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor = None  # the application did it already; leave it alone
            else:
                kwargs: dict[str, Any] = {
                    "tracer_provider": tracer_provider,
                    "request_hook": request_hook,
                }
                if meter_provider is not None:
                    kwargs["meter_provider"] = meter_provider
                instrumentor.instrument(**kwargs)
    handle = TelemetryHandle(tracer_provider, meter_provider, instrumentor, not set_global)
    if set_global:
        _GLOBAL_HANDLE = handle
    return handle


_GLOBAL_HANDLE: TelemetryHandle | None = None
