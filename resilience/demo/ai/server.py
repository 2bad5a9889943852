"""The fake AI server: :class:`AIUpstream`, its figures, and :func:`start_ai_upstream`."""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from email.utils import formatdate
from types import TracebackType
from typing import Any

from aiohttp import web

from resilience.demo.ai._wire import (
    ANTHROPIC_TYPES,
    OPENAI_TYPES,
    BadRequest,
    Provider,
    anthropic_usage,
    ceil_seconds,
    go_duration,
    openai_usage,
    parse_tokens,
    pieces,
    rfc3339,
    sse,
    words,
)
from resilience.demo.ai.faults import Fault
from resilience.demo.upstream import RequestRecord, Upstream, UpstreamServer

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


@dataclass(frozen=True)
class AICall:
    """One request seen by the fake server.

    Attributes:
        t: arrival time, seconds since the server started (its own clock).
        provider: ``"openai"`` or ``"anthropic"``.
        status: the status answered (a stream that failed midway is a 200).
        kind: ``"ok"`` (admitted), ``"quota"`` (a 429 of the quota), ``"fault"`` (a scripted or
            ``fail_rate`` error), ``"stream_error"`` (admitted, then an error event),
            ``"invalid"`` (a malformed request or a wrong key).
        input_tokens, output_tokens: the call's tokens (billed only when admitted).
        retry_count: the ``x-stainless-retry-count`` header sent, or ``None``.
        stream: whether a stream was asked for.
    """

    t: float
    provider: Provider
    status: int
    kind: str
    input_tokens: int = 0
    output_tokens: int = 0
    retry_count: int | None = None
    stream: bool = False


@dataclass(frozen=True)
class AIStats:
    """Figures of a run, as the fake server saw it.

    Attributes:
        limit, window, token_limit: the enforced quotas (``token_limit`` may be ``None``).
        requests: every request to the two endpoints.
        ok: admitted calls (including streams that then failed midway).
        by_status: answers per status.
        by_provider: requests per provider.
        quota_429: 429s of the quota (not the scripted ones).
        faults: scripted or ``fail_rate`` error answers.
        stream_errors: streams ended by an error event.
        max_in_window: the most admissions in any rolling window (at most ``limit``; the other
            tenant's are not counted).
        max_tokens_in_window: the most tokens admitted in any rolling window.
        input_tokens, output_tokens, total_tokens: tokens of the admitted calls.
        retry_counts: how many requests carried each ``x-stainless-retry-count`` value.
        sdk_retries: requests whose ``x-stainless-retry-count`` was above 0.
        other_tenant: admissions taken by the other client (``exhaust_every``).
        elapsed: seconds from the first to the last request.
        goodput: admissions over what the quota allowed in ``elapsed`` (as the demo upstream).
    """

    limit: int
    window: float
    token_limit: int | None
    requests: int
    ok: int
    by_status: dict[int, int]
    by_provider: dict[str, int]
    quota_429: int
    faults: int
    stream_errors: int
    max_in_window: int
    max_tokens_in_window: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    retry_counts: dict[int, int]
    sdk_retries: int
    other_tenant: int
    elapsed: float
    goodput: float

    @property
    def rate_limited(self) -> int:
        """Every 429 answered (quota and scripted)."""
        return self.by_status.get(429, 0)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON (int keys as strings)."""
        d = asdict(self)
        d["by_status"] = {str(k): v for k, v in self.by_status.items()}
        d["retry_counts"] = {str(k): v for k, v in self.retry_counts.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AIStats:
        """The inverse of :meth:`to_dict`."""
        d = dict(data)
        d["by_status"] = {int(k): v for k, v in d["by_status"].items()}
        d["retry_counts"] = {int(k): v for k, v in d["retry_counts"].items()}
        return cls(**d)


@dataclass
class _Admission:
    status: int
    wait: float = 0.0
    quota: str | None = None  # the exhausted quota: "requests", "tokens", "input_tokens", ...
    limit: int = 0
    used: int = 0
    requested: int = 0


@dataclass
class _TokenQuota:
    name: str  # "tokens", "input_tokens", "output_tokens"
    limit: int
    advertised: int
    used: int = 0
    log: deque[tuple[float, int]] = field(default_factory=deque)

    def need(self, inp: int, out: int) -> int:
        return {"tokens": inp + out, "input_tokens": inp, "output_tokens": out}[self.name]

    def evict(self, horizon: float) -> None:
        while self.log and self.log[0][0] <= horizon:
            self.used -= self.log.popleft()[1]

    def wait_for(self, need: int, now: float, window: float) -> float:
        """Seconds until ``need`` more tokens fit (``math.inf`` if they never can)."""
        if need > self.limit:
            return math.inf
        used = self.used
        for t, n in self.log:
            used -= n
            if used + need <= self.limit:
                return max(0.0, t + window - now)
        return 0.0  # pragma: no cover - the loop empties the window

    def add(self, t: float, n: int) -> None:
        if n > 0:
            self.log.append((t, n))
            self.used += n


def _check_int(name: str, v: object, *, optional: bool = True) -> None:
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an int >= 1{' or None' if optional else ''}, got {v!r}")


# -- the server ------------------------------------------------------------------------------


@dataclass
class AIUpstream(Upstream):
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
    """

    token_limit: int | None = None
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    advertised_limit: int | None = None
    advertised_token_limit: int | None = None
    exhaust_every: float | None = None
    slow_rate: float = 0.0
    slow_delay: float = 0.0
    output_ratio: float = 1.0
    default_max_tokens: int = 16
    api_key: str | None = None
    calls: list[AICall] = field(default_factory=list, init=False)
    stream_gate: asyncio.Event | None = field(default=None, init=False)
    _script: deque[Fault] = field(default_factory=deque, init=False, repr=False)
    _quotas: list[_TokenQuota] = field(default_factory=list, init=False, repr=False)
    _next_exhaust: float = field(default=math.inf, init=False, repr=False)
    _other: int = field(default=0, init=False, repr=False)
    _slow_rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("token_limit", "input_token_limit", "output_token_limit"):
            _check_int(name, getattr(self, name))
        _check_int("advertised_limit", self.advertised_limit)
        _check_int("advertised_token_limit", self.advertised_token_limit)
        _check_int("default_max_tokens", self.default_max_tokens, optional=False)
        if self.exhaust_every is not None and not (
            isinstance(self.exhaust_every, (int, float)) and 0 < self.exhaust_every < math.inf
        ):
            raise ValueError(
                f"exhaust_every must be seconds > 0 or None, got {self.exhaust_every!r}"
            )
        if not (isinstance(self.slow_rate, (int, float)) and 0 <= self.slow_rate <= 1):
            raise ValueError(f"slow_rate must be in [0, 1], got {self.slow_rate!r}")
        if not (isinstance(self.slow_delay, (int, float)) and 0 <= self.slow_delay < math.inf):
            raise ValueError(f"slow_delay must be seconds >= 0, got {self.slow_delay!r}")
        if not (isinstance(self.output_ratio, (int, float)) and 0 < self.output_ratio < math.inf):
            raise ValueError(f"output_ratio must be a number > 0, got {self.output_ratio!r}")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise TypeError(f"api_key must be a str or None, got {type(self.api_key).__name__}")
        self._quotas = [
            _TokenQuota(
                name, lim, (self.advertised_token_limit or lim) if name == "tokens" else lim
            )
            for name, lim in (
                ("tokens", self.token_limit),
                ("input_tokens", self.input_token_limit),
                ("output_tokens", self.output_token_limit),
            )
            if lim is not None
        ]
        if self.exhaust_every is not None:
            self._next_exhaust = self._t0 + self.exhaust_every
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

    # -- the decision -------------------------------------------------------------------------

    def _other_tenant(self, now: float) -> None:
        """Apply the other client's fills due by ``now`` (each at its own time)."""
        every = self.exhaust_every
        if every is None:
            return
        while self._next_exhaust <= now:
            tb = self._next_exhaust
            self._next_exhaust += every
            if tb <= now - self.window:
                continue  # long gone by now
            self._evict(tb - self.window)
            take = self.limit - len(self._admitted)
            self._admitted.extend([tb] * max(0, take))
            self._other += max(0, take)
            for q in self._quotas:
                q.add(tb, q.limit - q.used)

    def _evict(self, horizon: float) -> None:
        admitted = self._admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        for q in self._quotas:
            q.evict(horizon)

    def decide(self) -> tuple[int, float]:
        """The demo endpoint's decision (:meth:`Upstream.decide`), after the other tenant."""
        self._other_tenant(self.clock())
        return super().decide()

    def admit(self, input_tokens: int, output_tokens: int) -> _Admission:
        """Decide one call with these tokens arriving now (recorded in :attr:`log`)."""
        now = self.clock()
        self._other_tenant(now)
        t = now - self._t0
        if self.fail_rate and self._rng.random() < self.fail_rate:
            self.log.append(RequestRecord(t, 503))
            return _Admission(503)
        self._evict(now - self.window)
        worst = _Admission(200)
        if len(self._admitted) >= self.limit:
            worst = _Admission(
                429,
                self._admitted[0] + self.window - now,
                "requests",
                self.limit,
                len(self._admitted),
                1,
            )
        for q in self._quotas:
            need = q.need(input_tokens, output_tokens)
            if q.used + need > q.limit:
                wait = q.wait_for(need, now, self.window)
                if worst.status == 200 or wait > worst.wait:
                    worst = _Admission(429, wait, q.name, q.limit, q.used, need)
        if worst.status == 429:
            if math.isinf(worst.wait):
                worst.wait = self.window  # larger than the quota: never admitted
            self.log.append(RequestRecord(t, 429))
            return worst
        self._admitted.append(now)
        for q in self._quotas:
            q.add(now, q.need(input_tokens, output_tokens))
        self._ok += 1
        self.log.append(RequestRecord(t, 200))
        return worst

    # -- headers ------------------------------------------------------------------------------

    def _reset(self, oldest: float | None, now: float) -> float:
        return 0.0 if oldest is None else max(0.0, oldest + self.window - now)

    def rate_limit_headers(self, provider: Provider) -> dict[str, str]:
        """The provider's rate-limit headers for the quotas' state now."""
        now = self.clock()
        self._evict(now - self.window)
        adv = self.advertised_limit or self.limit
        n = len(self._admitted)
        req_reset = self._reset(self._admitted[0] if self._admitted else None, now)
        quotas = [("requests", adv, max(0, adv - n), req_reset)]
        for q in self._quotas:
            oldest = q.log[0][0] if q.log else None
            quotas.append(
                (q.name, q.advertised, max(0, q.advertised - q.used), self._reset(oldest, now))
            )
        h: dict[str, str] = {}
        if provider == "openai":
            for name, limit, remaining, reset in quotas:
                if name not in ("requests", "tokens"):
                    continue
                h[f"x-ratelimit-limit-{name}"] = str(limit)
                h[f"x-ratelimit-remaining-{name}"] = str(remaining)
                h[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        else:
            wall = time.time()
            for name, limit, remaining, reset in quotas:
                prefix = "anthropic-ratelimit-" + name.replace("_", "-")
                h[f"{prefix}-limit"] = str(limit)
                h[f"{prefix}-remaining"] = str(remaining)
                h[f"{prefix}-reset"] = rfc3339(wall + reset)
        return h

    def _base_headers(self, provider: Provider) -> dict[str, str]:
        rid = f"req_{uuid.uuid4().hex[:24]}"
        h = {"date": formatdate(usegmt=True), **self.rate_limit_headers(provider)}
        if provider == "openai":
            h["x-request-id"] = rid
            h["openai-processing-ms"] = "1"
        else:
            h["request-id"] = rid
        return h

    # -- answers ------------------------------------------------------------------------------

    def _error(
        self,
        provider: Provider,
        status: int,
        *,
        etype: str | None = None,
        code: str | None = None,
        billing: bool = False,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        h = self._base_headers(provider)
        if provider == "openai":
            if billing:
                etype = code = "insufficient_quota"
                message = message or (
                    "You exceeded your current quota, please check your plan and billing details."
                )
            d_type, d_code = OPENAI_TYPES.get(status, ("server_error", None))
            body: dict[str, Any] = {
                "error": {
                    "message": message or f"fake upstream: error {status}",
                    "type": etype or d_type,
                    "param": None,
                    "code": code if code is not None else d_code,
                }
            }
        else:
            if billing:
                etype = etype or "rate_limit_error"
                code = code or "enforced_spend_limit_reached"
                message = message or "You have reached your specified API usage limits."
            err: dict[str, Any] = {
                "type": etype or ANTHROPIC_TYPES.get(status, "api_error"),
                "message": message or f"fake upstream: error {status}",
            }
            if code is not None:
                err["details"] = {"error_code": code}
            body = {"type": "error", "error": err, "request_id": h["request-id"]}
        h.update(headers or {})
        return web.json_response(body, status=status, headers=h)

    def _quota_429(self, provider: Provider, model: str, a: _Admission) -> web.Response:
        wait = a.wait
        if provider == "openai":
            headers = {
                "retry-after-ms": str(max(1, math.ceil(wait * 1000 - 1e-9))),
                "retry-after": str(ceil_seconds(wait)),
            }
            kind = "requests" if a.quota == "requests" else "tokens"
            msg = (
                f"Rate limit reached for {model} in organization org-fake on {kind} per min: "
                f"Limit {a.limit}, Used {a.used}, Requested {a.requested}. "
                f"Please try again in {go_duration(wait)}."
            )
            return self._error(
                provider, 429, etype=kind, code="rate_limit_exceeded", message=msg, headers=headers
            )
        what = (a.quota or "requests").replace("_", " ")
        msg = (
            f"This request would exceed your organization's rate limit of {a.limit} {what} "
            f"per {self.window:g} seconds. Please try again later."
        )
        headers = {"retry-after": str(ceil_seconds(wait))}
        return self._error(provider, 429, message=msg, headers=headers)

    def _record(self, call: AICall) -> None:
        self.calls.append(call)

    async def _handle(self, request: web.Request, provider: Provider) -> web.StreamResponse:
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
            return self._error(provider, 401, message="invalid x-api-key / API key")
        try:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                raise BadRequest("the request body is not valid JSON") from None
            inp, out = parse_tokens(provider, body, self.output_ratio, self.default_max_tokens)
        except BadRequest as exc:
            record(400, "invalid")
            self.log.append(RequestRecord(t, 400))
            return self._error(provider, 400, message=str(exc))
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
            return self._error(
                provider,
                fault.status,
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
                return self._error(provider, 503, message="fake upstream: unavailable")
            record(429, "quota", inp, out, stream)
            return self._quota_429(provider, model, a)
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
        if not stream:
            payload = (self._openai_body if provider == "openai" else self._anthropic_body)(
                model, inp, out, body
            )
            return web.json_response(payload, headers=headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(
            request, provider, model, inp, out, body, headers, include_usage, error
        )

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            key = auth[7:] if auth.lower().startswith("bearer ") else None
        return key == self.api_key

    def _max_tokens(self, provider: Provider, body: Mapping[str, Any]) -> int:
        if provider == "anthropic":
            return int(body["max_tokens"])
        return int(
            body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens
        )

    def _openai_body(
        self, model: str, inp: int, out: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        finish = "length" if out >= self._max_tokens("openai", body) else "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": " ".join(words(out)),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": openai_usage(inp, out),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _anthropic_body(
        self, model: str, inp: int, out: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        stop = "max_tokens" if out >= self._max_tokens("anthropic", body) else "end_turn"
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": " ".join(words(out))}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": anthropic_usage(inp, out),
        }

    async def _stream(
        self,
        request: web.Request,
        provider: Provider,
        model: str,
        inp: int,
        out: int,
        body: Mapping[str, Any],
        headers: dict[str, str],
        include_usage: bool,
        error: str | None,
    ) -> web.StreamResponse:
        headers["content-type"] = "text/event-stream; charset=utf-8"
        headers["cache-control"] = "no-cache"
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        events = (
            self._openai_events(model, inp, out, body, include_usage, error)
            if provider == "openai"
            else self._anthropic_events(model, inp, out, body, error)
        )
        try:
            for i, chunk in enumerate(events):
                await resp.write(chunk)
                if i == 1 and self.stream_gate is not None:
                    await self.stream_gate.wait()
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):  # the client went away
            pass
        return resp

    def _openai_events(
        self,
        model: str,
        inp: int,
        out: int,
        body: Mapping[str, Any],
        include_usage: bool,
        error: str | None,
    ) -> list[bytes]:
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            d: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **extra,
            }
            if include_usage:
                d.setdefault("usage", None)
            return sse(d)

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        for i, piece in enumerate(pieces(words(out))):
            events.append(chunk({"content": piece if i == 0 else " " + piece}))
            if error is not None:
                events.append(
                    sse(
                        {
                            "error": {
                                "message": f"fake upstream: {error}",
                                "type": error,
                                "param": None,
                                "code": None,
                            }
                        }
                    )
                )
                return events
        finish = "length" if out >= self._max_tokens("openai", body) else "stop"
        events.append(chunk({}, finish))
        if include_usage:
            usage_chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": openai_usage(inp, out),
            }
            events.append(sse(usage_chunk))
        events.append(b"data: [DONE]\n\n")
        return events

    def _anthropic_events(
        self, model: str, inp: int, out: int, body: Mapping[str, Any], error: str | None
    ) -> list[bytes]:
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**anthropic_usage(inp, 1)},
        }
        events = [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            sse({"type": "ping"}, "ping"),
        ]
        for i, piece in enumerate(pieces(words(out))):
            text = piece if i == 0 else " " + piece
            events.append(
                sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": text},
                    },
                    "content_block_delta",
                )
            )
            if error is not None:
                events.append(
                    sse(
                        {
                            "type": "error",
                            "error": {"type": error, "message": f"fake upstream: {error}"},
                        },
                        "error",
                    )
                )
                return events
        stop = "max_tokens" if out >= self._max_tokens("anthropic", body) else "end_turn"
        events += [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"input_tokens": inp, "output_tokens": out},
                },
                "message_delta",
            ),
            sse({"type": "message_stop"}, "message_stop"),
        ]
        return events

    # -- the web app --------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

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
        calls = self.calls
        base = self.stats()
        admitted = [c for c in calls if c.kind in ("ok", "stream_error")]
        times = [c.t for c in admitted]
        cum = [0]
        for c in admitted:
            cum.append(cum[-1] + c.input_tokens + c.output_tokens)
        max_tokens = 0
        for i, t in enumerate(times):
            j = bisect.bisect_right(times, t - self.window)
            max_tokens = max(max_tokens, cum[i + 1] - cum[j])
        retry_counts = Counter(c.retry_count for c in calls if c.retry_count is not None)
        inp = sum(c.input_tokens for c in admitted)
        out = sum(c.output_tokens for c in admitted)
        return AIStats(
            limit=self.limit,
            window=float(self.window),
            token_limit=self.token_limit,
            requests=len(calls),
            ok=len(admitted),
            by_status=dict(sorted(Counter(c.status for c in calls).items())),
            by_provider=dict(sorted(Counter(c.provider for c in calls).items())),
            quota_429=sum(1 for c in calls if c.kind == "quota"),
            faults=sum(1 for c in calls if c.kind == "fault"),
            stream_errors=sum(1 for c in calls if c.kind == "stream_error"),
            max_in_window=base.max_in_window,
            max_tokens_in_window=max_tokens,
            input_tokens=inp,
            output_tokens=out,
            total_tokens=inp + out,
            retry_counts=dict(sorted(retry_counts.items())),
            sdk_retries=sum(n for k, n in retry_counts.items() if k > 0),
            other_tenant=self._other,
            elapsed=base.elapsed,
            goodput=base.goodput,
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
