"""Which tracer and meter the library uses, resolved once and cached: the "is it on?" check.

The library never configures the SDK. It takes its tracer and meter (scope ``"resilience"``,
the package version, the semconv schema) from the providers given to :func:`configure`, or else
from the global providers the application installed. :func:`state` returns the resolved
:class:`State`: a tracer or ``None``, the :class:`~resilience.telemetry._instruments.Instruments`
or ``None``, and ``enabled`` (either of them is there).

**The hot path.** Every emitter and both span hooks start with ``st = state()`` and return at
once when ``st.enabled`` is false. ``state()`` is one global read and two identity comparisons:
the providers seen at the last resolution against the API's current provider globals. It
resolves again when they differ (the application installed a provider since) or after
:func:`configure`. ``state`` itself is never rebound, so other modules bind it at import
(``from ._provider import state``) and pay no attribute lookup per call.

**Private names of opentelemetry-api.** Each use has a public fallback, taken when a name is
missing (a future API version may rename or remove it), at import or later:

- ``opentelemetry.trace._TRACER_PROVIDER`` and ``opentelemetry.metrics._internal.
  _METER_PROVIDER``, the globals behind ``set_tracer_provider`` / ``set_meter_provider``:
  reading them is the cheapest exact test of "has the application installed a provider since
  we last looked". Fallback: the public getters ``get_tracer_provider()`` /
  ``get_meter_provider()`` (a little slower per call), through :data:`_PUBLIC`, a stand-in that
  answers the same attribute names.
- ``opentelemetry.metrics._internal._ProxyMeter``, the meter the API hands out before any
  provider is installed (it records nothing until then). Fallback: a meter whose class is
  defined by the API's own ``opentelemetry.metrics`` package (its no-op or proxy meter)
  records nothing; an SDK's meter is defined elsewhere.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as _metrics
from opentelemetry import trace as _trace
from opentelemetry.trace import NoOpTracer, ProxyTracer

from resilience.telemetry import names
from resilience.telemetry._instruments import Instruments

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

try:
    from opentelemetry.metrics import _internal as _metrics_internal
except ImportError:  # pragma: no cover - depends on the installed opentelemetry-api
    _metrics_internal = None  # type: ignore[assignment]

__all__ = ["State", "configure", "enabled", "state"]


class State:
    """The resolved telemetry of the process: tracer and instruments, or nothing."""

    __slots__ = ("enabled", "instruments", "mp_seen", "tp_seen", "tracer")

    def __init__(self, tp_seen: Any, mp_seen: Any) -> None:
        #: The provider globals this state was resolved against (compared by :func:`state`).
        self.tp_seen = tp_seen
        self.mp_seen = mp_seen
        self.tracer: Tracer | None = None
        self.instruments: Instruments | None = None
        self.enabled = False


_CONFIG_TP: TracerProvider | None = None
_CONFIG_MP: MeterProvider | None = None
_UNSET: Any = object()  # never the value of a provider global: forces a resolution
_STATE = State(_UNSET, _UNSET)


class _PublicGetters:
    """Answers ``_TRACER_PROVIDER`` / ``_METER_PROVIDER`` through the API's public getters."""

    __slots__ = ()

    @property
    def _TRACER_PROVIDER(self) -> Any:  # the API module's name
        return _trace.get_tracer_provider()

    @property
    def _METER_PROVIDER(self) -> Any:  # the API module's name
        return _metrics.get_meter_provider()


_PUBLIC = _PublicGetters()
#: Where :func:`state` reads the provider globals: the API modules themselves (their private
#: names), or :data:`_PUBLIC`. Chosen by :func:`_select`.
_tp_globals: Any = _PUBLIC
_mp_globals: Any = _PUBLIC


def _has_private_globals() -> bool:
    return hasattr(_trace, "_TRACER_PROVIDER") and hasattr(_metrics_internal, "_METER_PROVIDER")


def _select(private: bool | None = None) -> None:
    """Read the provider globals the private way (when present) or through the public getters."""
    global _tp_globals, _mp_globals
    if private is None:
        private = _has_private_globals()
    if private:
        _tp_globals, _mp_globals = _trace, _metrics_internal
    else:
        _tp_globals = _mp_globals = _PUBLIC


_select()


def reads_private_globals() -> bool:
    """Whether :func:`state` reads the API's private globals (else the public getters)."""
    return _tp_globals is not _PUBLIC


def state() -> State:
    """The cached :class:`State`, resolved again when the provider globals changed."""
    st = _STATE
    try:
        if st.tp_seen is _tp_globals._TRACER_PROVIDER and st.mp_seen is _mp_globals._METER_PROVIDER:
            return st
    except AttributeError:  # the private globals are gone: the public getters from now on
        _select(private=False)
        return state()
    return _resolve()


def _globals_seen() -> tuple[Any, Any]:
    try:
        return _tp_globals._TRACER_PROVIDER, _mp_globals._METER_PROVIDER
    except AttributeError:
        _select(private=False)
        return _PUBLIC._TRACER_PROVIDER, _PUBLIC._METER_PROVIDER


def records_nothing(meter: Meter) -> bool:
    """Whether ``meter`` is the API's own no-op or proxy meter (no SDK behind it)."""
    if isinstance(meter, _metrics.NoOpMeter):
        return True
    proxy = getattr(_metrics_internal, "_ProxyMeter", None)
    if isinstance(proxy, type) and isinstance(meter, proxy):
        return True
    module = type(meter).__module__
    return module == "opentelemetry.metrics" or module.startswith("opentelemetry.metrics.")


def _version() -> str:
    # The package root defines ``__version__``; it is always initialised before this
    # subpackage (importing ``resilience.telemetry`` runs ``resilience/__init__`` first), so
    # its attribute is read here rather than imported: telemetry imports nothing from the
    # package root (it would pull in the pipeline and the policies).
    return str(getattr(sys.modules.get("resilience"), "__version__", ""))


def _resolve() -> State:
    global _STATE
    version = _version()
    # The public getters also load a provider named by OTEL_PYTHON_TRACER_PROVIDER /
    # OTEL_PYTHON_METER_PROVIDER, which sets the globals: read what we compare afterwards.
    tp = _CONFIG_TP if _CONFIG_TP is not None else _trace.get_tracer_provider()
    mp = _CONFIG_MP if _CONFIG_MP is not None else _metrics.get_meter_provider()
    st = State(*_globals_seen())
    tracer = tp.get_tracer(names.SCOPE, version, names.SCHEMA_URL)
    # A ProxyTracer is what the API hands out before any provider is installed: a no-op
    # until then (we resolve again when the global changes). NoOpTracer: SDK disabled.
    if not isinstance(tracer, (ProxyTracer, NoOpTracer)):
        st.tracer = tracer
    meter = mp.get_meter(names.SCOPE, version, names.SCHEMA_URL)
    if not records_nothing(meter):
        st.instruments = Instruments(meter)
    st.enabled = st.tracer is not None or st.instruments is not None
    _STATE = st
    return st


def configure(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Use these providers for the library's spans and metrics (``None``: the global ones).

    The library never configures the OpenTelemetry SDK; by default it follows the providers
    the application installed globally (``opentelemetry.trace.set_tracer_provider``), picking
    up a provider installed later automatically. Call this to inject providers instead (tests,
    or an application that keeps several), or with no arguments to go back to the globals.
    Takes effect for calls that start afterwards.
    """
    global _CONFIG_TP, _CONFIG_MP, _STATE
    _CONFIG_TP = tracer_provider
    _CONFIG_MP = meter_provider
    _select()
    _STATE = State(_UNSET, _UNSET)


def enabled() -> bool:
    """Whether any telemetry is recorded now (a tracer or a meter provider is installed)."""
    return state().enabled
