"""Scripted answers of the fake AI server."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Fault"]


@dataclass(frozen=True)
class Fault:
    """One scripted answer (see :meth:`AIUpstream.script`); the constructors below name them.

    Attributes:
        status: the status to answer, or ``None`` to answer normally (through the quota) after
            ``delay`` or with a ``mid_stream`` error.
        error_type: the error body's type; default: the provider's for ``status``
            (OpenAI ``invalid_request_error``, ``requests``, ``server_error``...; Anthropic
            ``invalid_request_error``, ``rate_limit_error``, ``api_error``,
            ``overloaded_error``...).
        error_code: OpenAI's ``error.code`` or Anthropic's ``error.details.error_code``.
        billing: a 429 about money, not rate: OpenAI ``insufficient_quota`` (type and code),
            Anthropic's ``enforced_spend_limit_reached``.
        message: the error message (a default otherwise).
        headers: extra response headers (they win over the server's own).
        delay: seconds to wait before answering (for ``status=None``: after admission).
        mid_stream: for a streaming request, admit it, send the first events, then an error
            event of ``error_type`` (default ``overloaded_error``) and end the stream; a
            non-streaming request gets ``status`` (default 529) instead.
    """

    status: int | None = 500
    error_type: str | None = None
    error_code: str | None = None
    billing: bool = False
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    mid_stream: bool = False

    def __post_init__(self) -> None:
        if self.status is not None and (
            isinstance(self.status, bool)
            or not isinstance(self.status, int)
            or not 400 <= self.status <= 599
        ):
            raise ValueError(
                f"status must be an error status (400-599) or None, got {self.status!r}"
            )
        if not (isinstance(self.delay, (int, float)) and 0 <= self.delay < math.inf):
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {self.delay!r}")
        if not isinstance(self.headers, Mapping):
            raise TypeError(f"headers must be a mapping, got {type(self.headers).__name__}")

    # The scripted faults the tests and benchmarks use. -------------------------------------

    @classmethod
    def server_error(cls, status: int = 500, **kw: Any) -> Fault:
        """A 5xx (500, 502, 503, 504) with the provider's server error body."""
        return cls(status=status, **kw)

    @classmethod
    def overloaded(cls, **kw: Any) -> Fault:
        """Anthropic's 529 ``overloaded_error`` (OpenAI endpoints answer it as a 529 too)."""
        return cls(status=529, error_type="overloaded_error", **kw)

    @classmethod
    def insufficient_quota(cls, **kw: Any) -> Fault:
        """A billing 429 that must fail fast: OpenAI ``insufficient_quota``, Anthropic's
        ``enforced_spend_limit_reached`` (``EnforcedSpendLimitReachedError``)."""
        return cls(status=429, billing=True, **kw)

    @classmethod
    def bad_request(cls, **kw: Any) -> Fault:
        """A 400 ``invalid_request_error``."""
        return cls(status=400, **kw)

    @classmethod
    def too_large(cls, **kw: Any) -> Fault:
        """A 413 (Anthropic ``request_too_large``)."""
        return cls(status=413, **kw)

    @classmethod
    def rate_limited(
        cls, *, retry_after_ms: float | None = None, retry_after: str | None = None, **kw: Any
    ) -> Fault:
        """A 429 rate limit with the given hints (``retry-after-ms``, ``retry-after``) and no
        other: unlike a quota 429 it consumes nothing and says only what it is told."""
        headers = dict(kw.pop("headers", {}))
        if retry_after_ms is not None:
            headers["retry-after-ms"] = f"{retry_after_ms:g}"
        if retry_after is not None:
            headers["retry-after"] = retry_after
        return cls(status=429, headers=headers, **kw)

    @classmethod
    def should_retry(cls, flag: bool, status: int = 503, **kw: Any) -> Fault:
        """An error with an explicit ``x-should-retry: true|false``."""
        headers = {**kw.pop("headers", {}), "x-should-retry": "true" if flag else "false"}
        return cls(status=status, headers=headers, **kw)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """A normal answer (through the quota), ``seconds`` late."""
        return cls(status=None, delay=seconds)

    @classmethod
    def stream_error(cls, error_type: str = "overloaded_error", **kw: Any) -> Fault:
        """An ``error`` event in the middle of a stream (the request is admitted first)."""
        return cls(status=None, error_type=error_type, mid_stream=True, **kw)

    def to_dict(self) -> dict[str, Any]:
        """The fault as JSON (for ``POST /__fake__/script``)."""
        d = asdict(self)
        d["headers"] = dict(self.headers)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """The inverse of :meth:`to_dict`; ``ValueError`` for unknown fields."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kwargs: dict[str, Any] = {k: (dict(v) if k == "headers" else v) for k, v in data.items()}
        return cls(**kwargs)
