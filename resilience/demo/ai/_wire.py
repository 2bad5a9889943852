"""The providers' wire formats: durations, times, token counts, error types, SSE."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = [
    "ANTHROPIC_TYPES",
    "OPENAI_TYPES",
    "BadRequest",
    "Provider",
    "anthropic_usage",
    "ceil_seconds",
    "count_tokens",
    "go_duration",
    "openai_usage",
    "parse_tokens",
    "pieces",
    "rfc3339",
    "sse",
    "words",
]

Provider = Literal["openai", "anthropic"]

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
_MAX_WORDS = 64


def go_duration(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` fields write it (Go's format),
    rounded up to the millisecond: ``"0s"``, ``"250ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``,
    ``"1h0m0s"``."""
    if not (seconds > 0):
        return "0s"
    total_ms = math.ceil(seconds * 1000 - 1e-9)
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339(unix: float) -> str:
    """An RFC 3339 UTC time, rounded up to the second (Anthropic's reset fields)."""
    return datetime.fromtimestamp(math.ceil(unix), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ceil_seconds(seconds: float) -> int:
    """Whole delay-seconds for ``Retry-After``, rounded up, at least 1 for a positive wait."""
    return max(1, math.ceil(seconds - 1e-9)) if seconds > 0 else 0


class BadRequest(Exception):
    """The request is malformed: answered 400 ``invalid_request_error``."""


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                n += len(part["text"])
        return n
    return 0


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BadRequest(f"{name}: expected an integer >= 1, got {v!r}")
    return v


def count_tokens(
    provider: Provider,
    body: Mapping[str, Any],
    *,
    output_ratio: float = 1.0,
    default_max_tokens: int = 16,
) -> tuple[int, int]:
    """The ``(input_tokens, output_tokens)`` the fake server bills for a request body.

    Input: the characters of every text in the prompt (OpenAI ``messages[].content``; Anthropic
    ``system`` and ``messages[].content``, strings or lists of ``{"text": ...}`` parts) divided
    by 4, rounded up, at least 1. Output: ``ceil(max_tokens * output_ratio)``, at least 1, where
    ``max_tokens`` is OpenAI's ``max_completion_tokens`` or ``max_tokens`` (default
    ``default_max_tokens``) or Anthropic's ``max_tokens`` (required).

    Raises ``ValueError`` for a body the provider would refuse with a 400.
    """
    try:
        return parse_tokens(provider, body, output_ratio, default_max_tokens)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None


def parse_tokens(
    provider: Provider, body: Mapping[str, Any], output_ratio: float, default_max_tokens: int
) -> tuple[int, int]:
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model: field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    chars = 0
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise BadRequest("messages: each message needs a role")
        chars += _text_chars(m.get("content"))
    if provider == "anthropic":
        chars += _text_chars(body.get("system"))
        max_tokens = _positive_int(body, "max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: field required")
    else:
        max_tokens = (
            _positive_int(body, "max_completion_tokens")
            or _positive_int(body, "max_tokens")
            or default_max_tokens
        )
    return max(1, math.ceil(chars / 4)), max(1, math.ceil(max_tokens * output_ratio - 1e-9))


OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", None),
    409: ("conflict", None),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_usage(inp: int, out: int) -> dict[str, Any]:
    return {
        "prompt_tokens": inp,
        "completion_tokens": out,
        "total_tokens": inp + out,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def anthropic_usage(inp: int, out: int) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def pieces(words: Sequence[str]) -> list[str]:
    """The words in up to 4 pieces (a stream's content deltas)."""
    if not words:
        return [""]
    size = max(1, math.ceil(len(words) / 4))
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def sse(data: Mapping[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def words(out: int) -> list[str]:
    """The text of ``out`` output tokens (at most 64 words)."""
    return [_WORDS[i % len(_WORDS)] for i in range(min(out, _MAX_WORDS))]
