"""The fake AI server's answers, per provider: error bodies (and the quota's 429), the
``chat.completion`` / ``message`` objects, and their server-sent event streams.

Pure functions of what was decided: the headers come in ready (:func:`base_headers` over the
quotas' :meth:`~resilience.demo.ai._quota.QuotaUpstream.rate_limit_headers`); only
:func:`stream` talks to the connection.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

from aiohttp import web

from resilience.demo.ai._quota import Admission
from resilience.demo.ai._wire import (
    ANTHROPIC_TYPES,
    OPENAI_TYPES,
    Provider,
    anthropic_usage,
    ceil_seconds,
    go_duration,
    openai_usage,
    pieces,
    sse,
    words,
)

__all__ = [
    "anthropic_body",
    "anthropic_events",
    "base_headers",
    "error",
    "max_tokens",
    "openai_body",
    "openai_events",
    "quota_429",
    "stream",
]


def base_headers(provider: Provider, rate_limit_headers: Mapping[str, str]) -> dict[str, str]:
    """Every answer's headers: ``date``, the rate-limit headers, a request id."""
    rid = f"req_{uuid.uuid4().hex[:24]}"
    h = {"date": formatdate(usegmt=True), **rate_limit_headers}
    if provider == "openai":
        h["x-request-id"] = rid
        h["openai-processing-ms"] = "1"
    else:
        h["request-id"] = rid
    return h


def max_tokens(provider: Provider, body: Mapping[str, Any], default_max_tokens: int) -> int:
    """The request's output cap (a body :func:`~resilience.demo.ai._wire.parse_tokens` took)."""
    if provider == "anthropic":
        return int(body["max_tokens"])
    return int(body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens)


# -- errors ------------------------------------------------------------------------------------


def error(
    provider: Provider,
    status: int,
    base: dict[str, str],
    *,
    etype: str | None = None,
    code: str | None = None,
    billing: bool = False,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The provider's error answer (``base``: :func:`base_headers`, updated with ``headers``)."""
    h = base
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


def quota_429(
    provider: Provider, model: str, a: Admission, window: float, base: dict[str, str]
) -> web.Response:
    """The provider's 429 for the quota ``a`` exhausted, with its retry hints."""
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
        return error(
            provider,
            429,
            base,
            etype=kind,
            code="rate_limit_exceeded",
            message=msg,
            headers=headers,
        )
    what = (a.quota or "requests").replace("_", " ")
    msg = (
        f"This request would exceed your organization's rate limit of {a.limit} {what} "
        f"per {window:g} seconds. Please try again later."
    )
    headers = {"retry-after": str(ceil_seconds(wait))}
    return error(provider, 429, base, message=msg, headers=headers)


# -- the objects -------------------------------------------------------------------------------


def openai_body(model: str, inp: int, out: int, cap: int) -> dict[str, Any]:
    """The ``chat.completion`` object (``cap``: :func:`max_tokens`)."""
    finish = "length" if out >= cap else "stop"
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


def anthropic_body(model: str, inp: int, out: int, cap: int) -> dict[str, Any]:
    """The ``message`` object (``cap``: :func:`max_tokens`)."""
    stop = "max_tokens" if out >= cap else "end_turn"
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


# -- the streams -------------------------------------------------------------------------------


async def stream(
    request: web.Request,
    headers: dict[str, str],
    events: list[bytes],
    gate: asyncio.Event | None,
) -> web.StreamResponse:
    """Send ``events`` (:func:`openai_events` or :func:`anthropic_events`) as a 200
    ``text/event-stream``, pausing after the first content event until ``gate`` is set."""
    headers["content-type"] = "text/event-stream; charset=utf-8"
    headers["cache-control"] = "no-cache"
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    try:
        for i, chunk in enumerate(events):
            await resp.write(chunk)
            if i == 1 and gate is not None:
                await gate.wait()
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):  # the client went away
        pass
    return resp


def openai_events(
    model: str, inp: int, out: int, cap: int, include_usage: bool, error: str | None
) -> list[bytes]:
    """``chat.completion.chunk`` events ending in ``data: [DONE]`` (with a usage chunk when
    ``include_usage``), or cut by an ``error`` event after the first content delta."""
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        d: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
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
    finish = "length" if out >= cap else "stop"
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


def anthropic_events(model: str, inp: int, out: int, cap: int, error: str | None) -> list[bytes]:
    """``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``...,
    ``content_block_stop``, ``message_delta``, ``message_stop``; or cut by an ``error`` event
    after the first delta."""
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
    stop = "max_tokens" if out >= cap else "end_turn"
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
