"""The fake AI server: :class:`AIUpstream`, its figures, and :func:`start_ai_upstream`.

This module handles each request (:meth:`AIUpstream.handle`: the key, the body, the script, the
decision, the answer) and runs the server. The rest lives in private modules, re-exported here
where public: the quotas and their headers in ``_quota.py`` (:class:`AIUpstream`'s base), the
per-provider bodies and streams in ``_answers.py``, the figures (:class:`AICall`,
:class:`AIStats`) in ``_stats.py``, the wire formats in ``_wire.py``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from aiohttp import web

from resilience.demo.ai import _answers
from resilience.demo.ai._quota import QuotaUpstream, check_int
from resilience.demo.ai._stats import AICall, AIStats, ai_stats
from resilience.demo.ai._wire import BadRequest, Provider, parse_tokens
from resilience.demo.ai.faults import Fault
from resilience.demo.upstream import RequestRecord, UpstreamServer

__all__ = [
    "ANTHROPIC_PATH",
    "CONTROL_PATH",
    "OPENAI_PATH",
    "AICall",
    "AIStats",
    "AIUpstream",
    "AIUpstreamServer",
    "check_host",
    "start_ai_upstream",
]

#: The OpenAI endpoint (``base_url`` of the SDK: ``<url>/v1``).
OPENAI_PATH = "/v1/chat/completions"
#: The Anthropic endpoint (``base_url`` of the SDK: ``<url>``).
ANTHROPIC_PATH = "/v1/messages"
#: The control endpoints' prefix: ``GET /__fake__/stats``, ``POST /__fake__/script``.
CONTROL_PATH = "/__fake__"

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


# -- the server ------------------------------------------------------------------------------


@dataclass
class AIUpstream(QuotaUpstream):
    """A strict sliding-window upstream speaking the OpenAI and Anthropic APIs.

    Args (beyond :class:`~resilience.demo.upstream.Upstream`'s ``limit``, ``window``,
    ``fail_rate``, ``seed`` and ``clock``):
        token_limit: tokens (input + output) admitted per window, or ``None``.
        input_token_limit, output_token_limit: Anthropic's separate token quotas, or ``None``.
        advertised_limit, advertised_token_limit: the limits the headers report (default: the
            enforced ones; set them higher for a quota lower than advertised).
        exhaust_every: every so many seconds another client of the same key takes the whole
            remaining quota (requests and tokens) at once; ``None``: never.
        slow_rate, slow_delay: this fraction of the admitted calls is answered ``slow_delay``
            seconds late (a slow tail).
        output_ratio, default_max_tokens: the output token count (see :func:`count_tokens`).
        api_key: when set, requests with another key (``Authorization: Bearer``,
            ``x-api-key``) are answered 401.

    ``stream_gate`` (an :class:`asyncio.Event`, in-process only): when set, every stream pauses
    after its first content event until the event is set (to prove a client does not buffer).

    The quotas (:meth:`admit`, :meth:`rate_limit_headers`) are those of its base,
    :class:`~resilience.demo.ai._quota.QuotaUpstream`. A subclass may observe or script each
    request by overriding :meth:`handle`.
    """

    slow_rate: float = 0.0
    slow_delay: float = 0.0
    output_ratio: float = 1.0
    default_max_tokens: int = 16
    api_key: str | None = None
    calls: list[AICall] = field(default_factory=list, init=False)
    stream_gate: asyncio.Event | None = field(default=None, init=False)
    _script: deque[Fault] = field(default_factory=deque, init=False, repr=False)
    _slow_rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("default_max_tokens", self.default_max_tokens, optional=False)
        if not (isinstance(self.slow_rate, (int, float)) and 0 <= self.slow_rate <= 1):
            raise ValueError(f"slow_rate must be in [0, 1], got {self.slow_rate!r}")
        if not (isinstance(self.slow_delay, (int, float)) and 0 <= self.slow_delay < math.inf):
            raise ValueError(f"slow_delay must be seconds >= 0, got {self.slow_delay!r}")
        if not (isinstance(self.output_ratio, (int, float)) and 0 < self.output_ratio < math.inf):
            raise ValueError(f"output_ratio must be a number > 0, got {self.output_ratio!r}")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise TypeError(f"api_key must be a str or None, got {type(self.api_key).__name__}")
        self._slow_rng = random.Random(None if self.seed is None else self.seed + 1)

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue ``faults``: each answers one of the next requests to either endpoint, in order
        (requests beyond the script are answered normally)."""
        for f in faults:
            if not isinstance(f, Fault):
                raise TypeError(f"script() takes Fault objects, got {type(f).__name__}")
        self._script.extend(faults)

    @property
    def pending_faults(self) -> int:
        """Scripted faults not yet used."""
        return len(self._script)

    # -- a request ----------------------------------------------------------------------------

    def _base_headers(self, provider: Provider) -> dict[str, str]:
        return _answers.base_headers(provider, self.rate_limit_headers(provider))

    def _record(self, call: AICall) -> None:
        self.calls.append(call)

    async def handle(self, request: web.Request, provider: Provider) -> web.StreamResponse:
        """Answer one request to ``provider``'s endpoint (recorded in :attr:`calls`).

        The per-request hook: a subclass may override it to observe or script each request,
        e.g. read the body first (``await request.read()`` is cached) and :meth:`script` a
        fault for this very request, then ``await super().handle(request, provider)``.
        """
        t = self.clock() - self._t0
        raw_count = request.headers.get("x-stainless-retry-count")
        retry_count = int(raw_count) if raw_count is not None and raw_count.isdigit() else None

        def record(
            status: int, kind: str, inp: int = 0, out: int = 0, stream: bool = False
        ) -> None:
            self._record(AICall(t, provider, status, kind, inp, out, retry_count, stream))

        if self.api_key is not None and not self._authorised(request):
            record(401, "invalid")
            self.log.append(RequestRecord(t, 401))
            return _answers.error(
                provider, 401, self._base_headers(provider), message="invalid x-api-key / API key"
            )
        try:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("the request body is not valid JSON") from None
            inp, out = parse_tokens(provider, body, self.output_ratio, self.default_max_tokens)
        except BadRequest as exc:
            record(400, "invalid")
            self.log.append(RequestRecord(t, 400))
            return _answers.error(provider, 400, self._base_headers(provider), message=str(exc))
        stream = bool(body.get("stream"))
        model = str(body["model"])
        fault = self._script.popleft() if self._script else None
        if fault is not None and fault.mid_stream and not stream:
            fault = replace(
                fault, status=529 if fault.status is None else fault.status, mid_stream=False
            )
        if fault is not None and fault.status is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            record(fault.status, "fault", inp, out, stream)
            self.log.append(RequestRecord(t, fault.status))
            return _answers.error(
                provider,
                fault.status,
                self._base_headers(provider),
                etype=fault.error_type,
                code=fault.error_code,
                billing=fault.billing,
                message=fault.message,
                headers=fault.headers,
            )
        a = self.admit(inp, out)
        if a.status != 200:
            if fault is not None:
                self._script.appendleft(fault)  # not admitted: the fault waits for a call that is
            if a.status == 503:
                record(503, "fault", inp, out, stream)
                return _answers.error(
                    provider,
                    503,
                    self._base_headers(provider),
                    message="fake upstream: unavailable",
                )
            record(429, "quota", inp, out, stream)
            return _answers.quota_429(provider, model, a, self.window, self._base_headers(provider))
        delay = fault.delay if fault is not None else 0.0
        if self.slow_rate and self._slow_rng.random() < self.slow_rate:
            delay += self.slow_delay
        if delay:
            await asyncio.sleep(delay)
        error = None
        if fault is not None and fault.mid_stream:
            error = fault.error_type or "overloaded_error"
        record(200, "stream_error" if error else "ok", inp, out, stream)
        headers = self._base_headers(provider)
        if fault is not None:
            headers.update(fault.headers)
        cap = _answers.max_tokens(provider, body, self.default_max_tokens)
        if not stream:
            make = _answers.openai_body if provider == "openai" else _answers.anthropic_body
            return web.json_response(make(model, inp, out, cap), headers=headers)
        if provider == "openai":
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _answers.openai_events(model, inp, out, cap, include_usage, error)
        else:
            events = _answers.anthropic_events(model, inp, out, cap, error)
        return await _answers.stream(request, headers, events, self.stream_gate)

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            key = auth[7:] if auth.lower().startswith("bearer ") else None
        return key == self.api_key

    # -- the web app --------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, "anthropic")

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.ai_stats().to_dict())

    async def _control_script(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            faults = [Fault.from_dict(f) for f in data["faults"]]
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.script(*faults)
        return web.json_response({"queued": len(faults), "pending": self.pending_faults})

    def make_app(self) -> web.Application:
        """The app: both providers' endpoints, the demo's ``/v1/analyze`` and ``/stats``, and
        ``GET /__fake__/stats``, ``POST /__fake__/script`` (``{"faults": [Fault.to_dict(),
        ...]}``)."""
        app = super().make_app()
        app.router.add_post(OPENAI_PATH, self._openai)
        app.router.add_post(ANTHROPIC_PATH, self._anthropic)
        app.router.add_get(CONTROL_PATH + "/stats", self._control_stats)
        app.router.add_post(CONTROL_PATH + "/script", self._control_script)
        return app

    # -- the figures --------------------------------------------------------------------------

    def ai_stats(self) -> AIStats:
        """Figures of the run so far (see :class:`AIStats`)."""
        return ai_stats(
            self.calls, self.stats(), token_limit=self.token_limit, other_tenant=self._other
        )


# -- running it ------------------------------------------------------------------------------


class AIUpstreamServer(UpstreamServer):
    """A running :class:`AIUpstream` (an async context manager; :meth:`stop` stops it).

    Attributes:
        upstream: the :class:`AIUpstream` (live state, :meth:`AIUpstream.script`).
        url: the base URL, e.g. ``http://127.0.0.1:41234``.
    """

    upstream: AIUpstream

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``openai.AsyncOpenAI``: ``<url>/v1``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``anthropic.AsyncAnthropic``: ``<url>``."""
        return self.url

    def script(self, *faults: Fault) -> None:
        """Queue scripted answers (see :meth:`AIUpstream.script`)."""
        self.upstream.script(*faults)

    def stats(self) -> AIStats:
        """The figures so far (see :class:`AIStats`)."""
        return self.upstream.ai_stats()

    async def stop(self) -> AIStats:
        """Stop serving (idempotent) and return the final figures."""
        await self()
        return self.stats()

    async def __aenter__(self) -> AIUpstreamServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def check_host(host: str) -> None:
    """``ValueError`` unless ``host`` is a loopback address."""
    if host not in _LOOPBACK:
        raise ValueError(f"host must be a loopback address ({sorted(_LOOPBACK)}), got {host!r}")


async def start_ai_upstream(
    *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AIUpstreamServer:
    """Start an :class:`AIUpstream` (``options`` are its arguments) on ``host:port`` (a
    loopback address; ``port=0``: a free port) on the running event loop."""
    check_host(host)
    upstream = AIUpstream(**options)
    runner = web.AppRunner(upstream.make_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or []
    actual = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    return AIUpstreamServer(upstream, runner, f"http://{shown}:{actual}")
