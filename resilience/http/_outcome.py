"""What an HTTP call's outcome says, extracted by duck typing from any client's exception.

No client is imported: exceptions are recognised by their attributes (``status_code``,
``response.status_code``, ``status``, ``headers``, ``body``) and, for transport errors, by the
names and modules of the classes in ``type(exc).__mro__`` (see :func:`transport_kind`).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Outcome", "TransportKind", "client_retries", "outcome_of", "transport_kind"]

#: How a call failed below HTTP:
#:
#: - ``"connect"``: no connection was made (refused, DNS failure, connect or pool timeout,
#:   proxy failure): the request was **not sent**;
#: - ``"timeout"``: the request may have been sent and no answer came in time;
#: - ``"network"``: the connection broke after the request may have been sent (reset,
#:   disconnected, protocol error from the server, truncated body);
#: - ``"tls"``: the TLS handshake or certificate check failed (not sent; retrying won't help);
#: - ``"invalid"``: the request could not be made (bad URL or scheme, local protocol error).
TransportKind = Literal["connect", "timeout", "network", "tls", "invalid"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One HTTP call's outcome, as far as the caller can see it.

    Attributes:
        status: the HTTP status, or ``None`` (transport errors, a mid-stream error event). An
            error raised while reading a stream may carry the stream's status (200).
        headers: the response's headers as given (any mapping, multi-dict or list of pairs),
            or ``None``.
        error_type: the error body's type: OpenAI's ``error.type`` (``"insufficient_quota"``),
            Anthropic's ``error.type`` (``"overloaded_error"``), or ``None``.
        error_code: OpenAI's ``error.code`` or Anthropic's ``error.details.error_code``
            (``"enforced_spend_limit_reached"``), or ``None``.
        transport: the kind of transport failure (see :data:`TransportKind`), or ``None``.
    """

    status: int | None = None
    headers: Any = None
    error_type: str | None = None
    error_code: str | None = None
    transport: TransportKind | None = None

    @property
    def failed(self) -> bool:
        """Whether this is a failure: a status >= 400, an error body, or a transport error."""
        return (
            (self.status is not None and self.status >= 400)
            or self.error_type is not None
            or self.error_code is not None
            or self.transport is not None
        )


def _attr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises is "absent"
        return None


def _status(v: object) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599:
        return v
    return None


def _top(cls: type) -> str:
    return str(getattr(cls, "__module__", "") or "").partition(".")[0]


_SDKS = frozenset({"openai", "anthropic"})
_HTTPX = frozenset({"httpx", "httpx2", "httpcore", "httpcore2"})

_HTTPX_KINDS: dict[str, TransportKind] = {
    "ConnectError": "connect",
    "ConnectTimeout": "connect",
    "PoolTimeout": "connect",
    "ProxyError": "connect",
    "UnsupportedProtocol": "invalid",
    "LocalProtocolError": "invalid",
    "ReadTimeout": "timeout",
    "WriteTimeout": "timeout",
    "TimeoutException": "timeout",
    "ReadError": "network",
    "WriteError": "network",
    "CloseError": "network",
    "RemoteProtocolError": "network",
    "ProtocolError": "network",
    "NetworkError": "network",
    "TransportError": "network",
}
_AIOHTTP_KINDS: dict[str, TransportKind] = {
    "ClientSSLError": "tls",
    "ServerFingerprintMismatch": "tls",
    "ClientConnectorError": "connect",
    "ConnectionTimeoutError": "connect",
    "SocketTimeoutError": "timeout",
    "ServerTimeoutError": "timeout",
    "ServerDisconnectedError": "network",
    "ClientOSError": "network",
    "ServerConnectionError": "network",
    "ClientConnectionError": "network",
    "ClientPayloadError": "network",
    "InvalidURL": "invalid",
    "NonHttpUrlClientError": "invalid",
}
# The SDKs' own transport errors (APIConnectionError, APITimeoutError) derive from the SDK's
# base error only; the underlying client error, chained as __cause__, refines them.
_SDK_KINDS: dict[str, TransportKind] = {
    "APITimeoutError": "timeout",
    "APIConnectionError": "network",
}
_BUILTIN_KINDS: dict[str, TransportKind] = {
    "ConnectionRefusedError": "connect",
    "ConnectionResetError": "network",
    "ConnectionAbortedError": "network",
    "BrokenPipeError": "network",
    "ConnectionError": "network",
    "TimeoutError": "timeout",
}
_TABLES: dict[str, dict[str, TransportKind]] = {
    **dict.fromkeys(_HTTPX, _HTTPX_KINDS),
    **dict.fromkeys(_SDKS, _SDK_KINDS),
    "aiohttp": _AIOHTTP_KINDS,
    "builtins": _BUILTIN_KINDS,
    "asyncio": {"TimeoutError": "timeout"},  # asyncio.TimeoutError on 3.10
    "concurrent": {"TimeoutError": "timeout"},
    "socket": {"gaierror": "connect", "herror": "connect", "timeout": "timeout"},
    "ssl": {"SSLZeroReturnError": "network", "SSLEOFError": "network", "SSLError": "tls"},
}
_ERRNO_NAMES: dict[str, TransportKind] = {
    **dict.fromkeys(
        ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", "EADDRNOTAVAIL"),
        "connect",
    ),
    **dict.fromkeys(("ECONNRESET", "ECONNABORTED", "EPIPE", "ENOTCONN", "ESHUTDOWN"), "network"),
    "ETIMEDOUT": "timeout",
}
_ERRNO_KINDS: dict[int, TransportKind] = {
    getattr(errno, name): kind for name, kind in _ERRNO_NAMES.items() if hasattr(errno, name)
}


def _own_kind(exc: BaseException) -> tuple[TransportKind | None, bool]:
    """The kind of ``exc`` alone (no causes), and whether it is an SDK's generic wrapper."""
    for cls in type(exc).__mro__:
        top = _top(cls)
        table = _TABLES.get(top)
        if table is not None:
            kind = table.get(cls.__name__)
            if kind is not None:
                return kind, top in _SDKS
    if isinstance(exc, OSError):
        code = exc.errno
        if isinstance(code, int):
            return _ERRNO_KINDS.get(code), False
    return None, False


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``'s causes, innermost last: ``__cause__``, else an unsuppressed ``__context__``."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 16:
        nxt = cur.__cause__
        if nxt is None and not cur.__suppress_context__:
            nxt = cur.__context__
        if nxt is None or nxt is exc or any(nxt is e for e in out):
            break
        out.append(nxt)
        cur = nxt
    return out


def transport_kind(exc: BaseException) -> TransportKind | None:
    """The transport failure ``exc`` stands for, or ``None`` if it is not one.

    Recognised by walking ``type(exc).__mro__`` (the most specific known class wins), matching
    class names within their top-level module: httpx / httpx2 / httpcore(2)
    (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ProxyError``: connect;
    ``ReadTimeout``, ``WriteTimeout``, ``TimeoutException``: timeout; ``ReadError``,
    ``WriteError``, ``CloseError``, ``RemoteProtocolError``, other ``TransportError``:
    network; ``UnsupportedProtocol``, ``LocalProtocolError``: invalid), aiohttp
    (``ClientConnectorError``, ``ConnectionTimeoutError``: connect; ``ClientSSLError``,
    ``ServerFingerprintMismatch``: tls; ``SocketTimeoutError``/``ServerTimeoutError``: timeout;
    other ``ClientConnectionError``, ``ClientPayloadError``: network; ``InvalidURL``: invalid),
    openai / anthropic (``APITimeoutError``: timeout, ``APIConnectionError``: network, each
    refined by the client error chained as its cause: a refused connection under
    ``APIConnectionError`` is "connect"), and the standard library (``ConnectionRefusedError``,
    ``socket.gaierror``: connect; other ``ConnectionError``: network; ``TimeoutError``: timeout;
    ``ssl.SSLError``: tls; an ``OSError`` whose errno is ECONNREFUSED, EHOSTUNREACH,
    ENETUNREACH, ...: connect, ECONNRESET, EPIPE, ...: network, ETIMEDOUT: timeout). A connect
    failure caused by a TLS error is "tls". Other ``OSError`` (a missing file) are not
    transport failures.
    """
    kind, generic = _own_kind(exc)
    if kind is None:
        return None
    chain = _chain(exc)
    if generic:
        for inner in chain:
            k, g = _own_kind(inner)
            if k is not None and not g:
                kind = k
                break
    if kind == "connect" and any(_own_kind(e)[0] == "tls" for e in chain):
        kind = "tls"
    return kind


_MAX_BODY = 65536
# Anthropic's spend-limit classes, in case the body lacks details.error_code.
_CLASS_CODES = {
    "EnforcedSpendLimitReachedError": "enforced_spend_limit_reached",
    "ContractSpendLimitReachedError": "contract_spend_limit_reached",
}


def _decode(body: object) -> object:
    if isinstance(body, (bytes, bytearray, str)):
        if len(body) > _MAX_BODY:
            return None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
    return body


def _httpx_body(response: object) -> object:
    """An httpx/httpx2 response's body if it was already read (never any I/O)."""
    if _top(type(response)) not in _HTTPX:
        return None
    try:
        return _attr(response, "content")  # raises ResponseNotRead if unread: caught
    except Exception:  # pragma: no cover - _attr catches
        return None


def _str(v: object) -> str | None:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """``(type, code)`` from an error body in OpenAI's or Anthropic's shape."""
    body = _decode(body)
    if not isinstance(body, Mapping):
        return None, None
    err = body.get("error")
    if isinstance(err, Mapping):
        inner: Mapping[Any, Any] = err  # {"error": {...}}: OpenAI's and Anthropic's bodies
    elif "message" in body and body.get("type") != "error":
        inner = body  # the inner object alone: what the openai SDK keeps as ``exc.body``
    else:
        return None, None  # a success body ({"type": "message", ...}) is no error
    etype = inner.get("type")
    etype = etype if isinstance(etype, str) and etype else None
    code = _str(inner.get("code"))
    if code is None:
        details = inner.get("details")
        if isinstance(details, Mapping):
            code = _str(details.get("error_code"))
    return etype, code


def _from_exception(exc: Exception, body: object) -> Outcome | None:
    status = _status(_attr(exc, "status_code"))
    response = _attr(exc, "response")
    if response is not None and status is None:
        status = _status(_attr(response, "status_code")) or _status(_attr(response, "status"))
    if status is None:
        status = _status(_attr(exc, "status"))
    headers = _attr(response, "headers") if response is not None else None
    if headers is None:
        headers = _attr(exc, "headers")
    if body is None:
        body = _attr(exc, "body")
    if body is None and response is not None and status is not None and status >= 400:
        body = _httpx_body(response)
    etype, code = _error_fields(body)
    if status is not None and status >= 400:
        if any(_top(c) in _SDKS for c in type(exc).__mro__):
            # What the body lacks, from the SDK's attributes and classes.
            if etype is None:
                etype = _str(_attr(exc, "type"))
            if code is None:
                code = _str(_attr(exc, "error_code")) or _str(_attr(exc, "code"))
            if code is None:
                code = next(
                    (
                        _CLASS_CODES[c.__name__]
                        for c in type(exc).__mro__
                        if c.__name__ in _CLASS_CODES
                    ),
                    None,
                )
        return Outcome(status, headers, etype, code)
    if etype is not None or code is not None:
        return Outcome(status, headers, etype, code)  # e.g. a mid-stream error event
    kind = transport_kind(exc)
    if kind is not None:
        return Outcome(None, headers, transport=kind)
    return None


def outcome_of(obj: object, *, body: object = None) -> Outcome | None:
    """The :class:`Outcome` carried by an exception or a response object, or ``None``.

    - An :class:`Outcome` is returned as is.
    - An exception with an HTTP status (100-599) is read the way the clients shape them:
      ``exc.status_code`` + ``exc.response.headers`` + ``exc.body`` (openai, anthropic),
      ``exc.response.status_code`` + ``.headers`` (httpx, httpx2, requests), ``exc.status`` +
      ``exc.headers`` (aiohttp's ``ClientResponseError``). The error body (``body=``, else
      ``exc.body``, else an httpx response's body when already read; a dict, or JSON text up
      to 64 KiB) gives :attr:`Outcome.error_type` / :attr:`~Outcome.error_code`; the SDKs'
      ``type`` / ``error_code`` / ``code`` attributes and Anthropic's spend-limit classes fill
      what the body lacks. A status below 400 without an error body (aiohttp's
      ``ContentTypeError``) is no HTTP failure: ``None``.
    - An exception without a status but with an error body (a mid-stream ``error`` event, such
      as Anthropic's ``overloaded_error``) gives an outcome with that error.
    - A transport error (see :func:`transport_kind`) gives ``Outcome(transport=kind)``.
    - Any other exception, and ``BaseException`` that is not an ``Exception``
      (``asyncio.CancelledError``), gives ``None``: it carries nothing about HTTP.
    - Any other object with an int ``status_code`` or ``status`` (a response: httpx, aiohttp,
      requests) gives its status and ``headers``; its error body is read from ``body=`` or,
      for a status >= 400, from an already-read httpx response. Objects without one: ``None``.

    Never raises.
    """
    if isinstance(obj, Outcome):
        return obj
    if isinstance(obj, BaseException):
        if not isinstance(obj, Exception):
            return None
        try:
            return _from_exception(obj, body)
        except Exception:  # pragma: no cover - defensive: duck typing never raises out
            return None
    status = _status(_attr(obj, "status_code")) or _status(_attr(obj, "status"))
    if status is None:
        return None
    if body is None and status >= 400:
        body = _httpx_body(obj)
    etype, code = _error_fields(body)
    return Outcome(status, _attr(obj, "headers"), etype, code)


#: The header the ``openai`` and ``anthropic`` SDKs send with every attempt (0 on the first).
CLIENT_RETRY_HEADER = "x-stainless-retry-count"


def client_retries(obj: object) -> int:
    """How many times the client had already retried the request behind ``obj`` by itself: the
    ``x-stainless-retry-count`` the AI SDKs send (0 on their first attempt), read from a request
    (``.headers``), or from an exception or response carrying one (``.request``,
    ``.response.request``). 0 when there is none or it cannot be read; never raises."""
    for path in (("headers",), ("request", "headers"), ("response", "request", "headers")):
        o: Any = obj
        try:
            for name in path:
                o = getattr(o, name)
            raw = o.get(CLIENT_RETRY_HEADER)
        except Exception:  # a missing attribute, or a request not attached to a response
            continue
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1", "replace")
        if isinstance(raw, str) and raw.strip().isdigit():
            return int(raw.strip())
    return 0
