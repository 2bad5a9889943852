"""resilience.http against the real clients: exceptions raised by openai, anthropic, httpx,
httpx2 and aiohttp themselves (through their own code paths, mock transports and loopback
sockets), classified without resilience.http importing any of them."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")
aiohttp = pytest.importorskip("aiohttp")

from multidict import CIMultiDict, CIMultiDictProxy  # noqa: E402
from yarl import URL  # noqa: E402

from resilience.http import Classification, WaitHint, classify, outcome_of  # noqa: E402

Handler = Callable[[Any], Any]


def _openai(handler: Handler) -> Any:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def _anthropic(handler: Handler) -> Any:
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://upstream.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def openai_error(handler: Handler, *, stream: bool = False) -> Exception:
    client = _openai(handler)

    def call() -> None:
        result = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=stream
        )
        for _ in result if stream else ():
            pass

    with pytest.raises(openai.OpenAIError) as info:
        call()
    return info.value


def anthropic_error(handler: Handler, *, stream: bool = False) -> Exception:
    client = _anthropic(handler)
    messages = [{"role": "user", "content": "hi"}]

    def call() -> None:
        if stream:
            with client.messages.stream(model="claude-test", max_tokens=8, messages=messages) as s:
                for _ in s:
                    pass
        else:
            client.messages.create(model="claude-test", max_tokens=8, messages=messages)

    with pytest.raises(anthropic.AnthropicError) as info:
        call()
    return info.value


def respond(status: int, headers: dict[str, str], body: object) -> Handler:
    def handler(request: Any) -> Any:
        return httpx2.Response(status, headers=headers, json=body)

    return handler


def oa_body(etype: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": "m", "type": etype, "param": None, "code": code}}


def an_body(etype: str, error_code: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": etype, "message": "m"}
    if error_code is not None:
        err["details"] = {"error_code": error_code}
    return {"type": "error", "error": err}


def shape(c: Classification | None) -> tuple[bool, str | None, bool, WaitHint | None]:
    assert c is not None
    return (c.retryable, c.fault, c.processed, c.wait)


NO = (False, "caller", True, None)


def retry(processed: bool = True, hint: WaitHint | None = None) -> tuple[Any, ...]:
    return (True, "upstream", processed, hint)


# One row per line of the status table, through each SDK's own error construction. -----------
# (id, status, headers, openai body, anthropic body, expected, anthropic class name)
ROWS: list[tuple[str, int, dict[str, str], Any, Any, tuple[Any, ...], str]] = [
    (
        "400",
        400,
        {},
        oa_body("invalid_request_error"),
        an_body("invalid_request_error"),
        NO,
        "BadRequestError",
    ),
    (
        "401",
        401,
        {},
        oa_body("invalid_request_error", "invalid_api_key"),
        an_body("authentication_error"),
        NO,
        "AuthenticationError",
    ),
    (
        "403",
        403,
        {},
        oa_body("permission_error"),
        an_body("permission_error"),
        NO,
        "PermissionDeniedError",
    ),
    (
        "404",
        404,
        {},
        oa_body("invalid_request_error", "model_not_found"),
        an_body("not_found_error"),
        NO,
        "NotFoundError",
    ),
    (
        "413",
        413,
        {},
        oa_body("invalid_request_error"),
        an_body("request_too_large"),
        NO,
        "ContentTooLargeError",
    ),
    (
        "422",
        422,
        {},
        oa_body("invalid_request_error"),
        an_body("invalid_request_error"),
        NO,
        "UnprocessableEntityError",
    ),
    ("408", 408, {}, oa_body("timeout"), an_body("timeout_error"), retry(), "RequestTimeoutError"),
    (
        "409",
        409,
        {},
        oa_body("conflict"),
        an_body("conflict_error"),
        (True, "caller", True, None),
        "ConflictError",
    ),
    (
        "429 retry-after-ms",
        429,
        {"retry-after-ms": "1500", "retry-after": "2"},
        oa_body("requests", "rate_limit_exceeded"),
        an_body("rate_limit_error"),
        retry(False, WaitHint(1.5, "retry_after")),
        "RateLimitError",
    ),
    (
        "429 retry-after",
        429,
        {"retry-after": "2"},
        oa_body("tokens", "rate_limit_exceeded"),
        an_body("rate_limit_error"),
        retry(False, WaitHint(2.0, "retry_after")),
        "RateLimitError",
    ),
    (
        "429 openai reset",
        429,
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "1s",
        },
        oa_body("requests", "rate_limit_exceeded"),
        an_body("rate_limit_error"),
        retry(False, WaitHint(360.0, "rate_limit_header")),
        "RateLimitError",
    ),
    (
        "429 no hint",
        429,
        {},
        oa_body("requests"),
        an_body("rate_limit_error"),
        retry(False),
        "RateLimitError",
    ),
    ("500", 500, {}, oa_body("server_error"), an_body("api_error"), retry(), "InternalServerError"),
    ("502", 502, {}, oa_body("server_error"), an_body("api_error"), retry(), "InternalServerError"),
    (
        "503",
        503,
        {"retry-after": "3"},
        oa_body("server_error"),
        an_body("api_error"),
        retry(True, WaitHint(3.0, "retry_after")),
        "ServiceUnavailableError",
    ),
    (
        "504",
        504,
        {},
        oa_body("server_error"),
        an_body("timeout_error"),
        retry(),
        "GatewayTimeoutError",
    ),
    (
        "529",
        529,
        {},
        oa_body("server_error"),
        an_body("overloaded_error"),
        retry(False),
        "OverloadedError",
    ),
    (
        "503 x-should-retry false",
        503,
        {"x-should-retry": "false", "retry-after": "3"},
        oa_body("server_error"),
        an_body("api_error"),
        (False, "upstream", True, None),
        "ServiceUnavailableError",
    ),
    (
        "400 x-should-retry true",
        400,
        {"x-should-retry": "true"},
        oa_body("invalid_request_error"),
        an_body("invalid_request_error"),
        (True, "caller", True, None),
        "BadRequestError",
    ),
]


@pytest.mark.parametrize(
    ("status", "headers", "oa", "an", "expected", "an_class"),
    [r[1:] for r in ROWS],
    ids=[r[0] for r in ROWS],
)
def test_sdk_status_errors(
    status: int,
    headers: dict[str, str],
    oa: Any,
    an: Any,
    expected: tuple[Any, ...],
    an_class: str,
) -> None:
    e = openai_error(respond(status, headers, oa))
    assert isinstance(e, openai.APIStatusError)
    assert shape(classify(e)) == expected
    e = anthropic_error(respond(status, headers, an))
    assert type(e).__name__ == an_class
    assert shape(classify(e)) == expected


def test_openai_insufficient_quota_fails_fast() -> None:
    e = openai_error(
        respond(
            429, {"retry-after-ms": "1500"}, oa_body("insufficient_quota", "insufficient_quota")
        )
    )
    assert isinstance(e, openai.RateLimitError)
    o = outcome_of(e)
    assert o is not None
    assert (o.status, o.error_type, o.error_code) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    c = classify(e)
    assert c == Classification(False, "caller", False, None, "billing: insufficient_quota")


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("enforced_spend_limit_reached", "EnforcedSpendLimitReachedError"),
        ("contract_spend_limit_reached", "ContractSpendLimitReachedError"),
    ],
)
def test_anthropic_spend_limits_fail_fast(code: str, cls: str) -> None:
    e = anthropic_error(respond(429, {"retry-after": "60"}, an_body("rate_limit_error", code)))
    assert type(e).__name__ == cls
    assert isinstance(e, anthropic.RateLimitError)
    assert shape(classify(e)) == (False, "caller", False, None)


def test_anthropic_spend_limit_class_without_details() -> None:
    from anthropic.types.shared import EnforcedSpendLimitReachedError

    req = httpx2.Request("POST", "http://upstream.test/v1/messages")
    resp = httpx2.Response(429, request=req)
    e = EnforcedSpendLimitReachedError("m", response=resp, body=None)
    o = outcome_of(e)
    assert o is not None
    assert o.error_code == "enforced_spend_limit_reached"
    assert not shape(classify(e))[0]


def test_anthropic_ramp_limit_is_a_rate_limit() -> None:
    e = anthropic_error(
        respond(429, {"retry-after": "5"}, an_body("rate_limit_error", "ramp_limit_exceeded"))
    )
    assert type(e).__name__ == "RampLimitExceededError"
    assert shape(classify(e)) == retry(False, WaitHint(5.0, "retry_after"))


def test_sdk_errors_constructed_directly() -> None:
    req = httpx2.Request("POST", "http://upstream.test/v1/chat/completions")
    resp = httpx2.Response(429, headers={"retry-after-ms": "250"}, request=req)
    e = openai.RateLimitError("m", response=resp, body=None)
    assert shape(classify(e)) == retry(False, WaitHint(0.25, "retry_after"))
    e = openai.RateLimitError(
        "m", response=resp, body={"code": "insufficient_quota", "message": "m"}
    )
    assert not shape(classify(e))[0]
    e2 = anthropic.OverloadedError("m", response=httpx2.Response(529, request=req), body=None)
    assert shape(classify(e2)) == retry(False)


# Mid-stream error events ----------------------------------------------------------------------

_ANTHROPIC_SSE = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","type":"message",'
    '"role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
    'event: error\ndata: {"type":"error","error":{"type":"%s","message":"m"}}\n\n'
)
_OPENAI_SSE = (
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    '[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    'data: {"error": {"message": "m", "type": "%s", "code": null}}\n\n'
)


def sse(text: str) -> Handler:
    def handler(request: Any) -> Any:
        return httpx2.Response(
            200,
            headers={"content-type": "text/event-stream", "x-ratelimit-remaining-requests": "9"},
            content=text.encode(),
        )

    return handler


@pytest.mark.parametrize(
    ("etype", "retryable"),
    [("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)],
)
def test_anthropic_mid_stream_error(etype: str, retryable: bool) -> None:
    e = anthropic_error(sse(_ANTHROPIC_SSE % etype), stream=True)
    assert isinstance(e, anthropic.APIStatusError)
    assert e.status_code == 200  # the stream's status: the error came inside it
    o = outcome_of(e)
    assert o is not None
    assert (o.status, o.error_type) == (200, etype)
    assert shape(classify(e)) == (retryable, "upstream", True, None)


@pytest.mark.parametrize(
    ("etype", "retryable"), [("server_error", True), ("invalid_request_error", False)]
)
def test_openai_mid_stream_error(etype: str, retryable: bool) -> None:
    e = openai_error(sse(_OPENAI_SSE % etype), stream=True)
    assert type(e) is openai.APIError
    assert shape(classify(e)) == (retryable, "upstream", True, None)


# Transport errors through the SDKs and through httpx / httpx2 ---------------------------------

TRANSPORT = [
    ("ConnectError", "connect"),
    ("ConnectTimeout", "connect"),
    ("PoolTimeout", "connect"),
    ("ProxyError", "connect"),
    ("ReadTimeout", "timeout"),
    ("WriteTimeout", "timeout"),
    ("ReadError", "network"),
    ("WriteError", "network"),
    ("CloseError", "network"),
    ("RemoteProtocolError", "network"),
    ("NetworkError", "network"),
    ("TimeoutException", "timeout"),
    ("TransportError", "network"),
    ("UnsupportedProtocol", "invalid"),
    ("LocalProtocolError", "invalid"),
]


@pytest.mark.parametrize(("name", "kind"), TRANSPORT)
@pytest.mark.parametrize("module", ["httpx", "httpx2"])
def test_httpx_transport_errors(module: str, name: str, kind: str) -> None:
    mod = httpx if module == "httpx" else httpx2
    exc = getattr(mod, name)("boom")
    o = outcome_of(exc)
    assert o is not None
    assert o.transport == kind


@pytest.mark.parametrize(("name", "kind"), TRANSPORT)
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sdk_connection_errors_take_the_kind_of_their_cause(sdk: str, name: str, kind: str) -> None:
    def handler(request: Any) -> Any:
        raise getattr(httpx2, name)("boom", request=request)

    e = openai_error(handler) if sdk == "openai" else anthropic_error(handler)
    mod = openai if sdk == "openai" else anthropic
    assert isinstance(e, mod.APIConnectionError)
    o = outcome_of(e)
    assert o is not None
    assert o.transport == kind


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sdk_connection_errors_without_a_cause(sdk: str) -> None:
    mod = openai if sdk == "openai" else anthropic
    req = httpx2.Request("POST", "http://upstream.test/")
    assert shape(classify(mod.APIConnectionError(request=req))) == retry(True)
    assert shape(classify(mod.APITimeoutError(req))) == retry(True)


@pytest.fixture
def refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)  # the kernel completes handshakes; nobody ever answers
    yield s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("module", ["httpx", "httpx2"])
def test_real_sockets_httpx(module: str, refused_port: int, silent_port: int) -> None:
    mod = httpx if module == "httpx" else httpx2
    with mod.Client(timeout=0.3) as client:
        with pytest.raises(mod.ConnectError) as info:
            client.get(f"http://127.0.0.1:{refused_port}/")
        assert shape(classify(info.value)) == retry(False)
        with pytest.raises(mod.ReadTimeout) as info2:
            client.get(f"http://127.0.0.1:{silent_port}/")
        assert shape(classify(info2.value)) == retry(True)
        assert shape(classify(info2.value, idempotent=False))[0] is False


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_real_sockets_sdk(sdk: str, refused_port: int, silent_port: int) -> None:
    mod = openai if sdk == "openai" else anthropic
    for port, kind in ((refused_port, "connect"), (silent_port, "timeout")):
        kwargs: dict[str, Any] = {"api_key": "k", "max_retries": 0, "timeout": 0.3}
        if sdk == "openai":
            client = mod.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", **kwargs)
        else:
            client = mod.Anthropic(base_url=f"http://127.0.0.1:{port}", **kwargs)
        with pytest.raises(mod.APIConnectionError) as info:
            client.models.list()
        o = outcome_of(info.value)
        assert o is not None
        assert o.transport == kind
        client.close()


@pytest.mark.parametrize("module", ["httpx", "httpx2"])
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"error": {"code": "insufficient_quota"}}, (False, "caller", False, None)),
        (
            429,
            {"error": {"code": "rate_limit_exceeded"}},
            retry(False, WaitHint(1.0, "retry_after")),
        ),
        (503, None, retry(True, WaitHint(1.0, "retry_after"))),
        (404, None, NO),
    ],
)
def test_httpx_status_errors(
    module: str, status: int, body: Any, expected: tuple[Any, ...]
) -> None:
    mod = httpx if module == "httpx" else httpx2
    req = mod.Request("POST", "http://upstream.test/v1/x")
    content = json.dumps(body).encode() if body is not None else b""
    resp = mod.Response(status, headers={"Retry-After": "1"}, content=content, request=req)
    with pytest.raises(mod.HTTPStatusError) as info:
        resp.raise_for_status()
    assert shape(classify(info.value)) == expected
    # A streamed response that was never read: no body, no I/O, the status still counts.
    unread = mod.Response(
        status, headers={"Retry-After": "1"}, stream=mod.ByteStream(content), request=req
    )
    o = outcome_of(mod.HTTPStatusError("x", request=req, response=unread))
    assert o is not None
    assert (o.status, o.error_code) == (status, None)
    # The response alone.
    c = classify(resp)
    assert c is not None
    assert c.retryable == expected[0]


# aiohttp ---------------------------------------------------------------------------------------


def _aiohttp_response_error(status: int, headers: dict[str, str]) -> Any:
    info = aiohttp.RequestInfo(
        URL("http://upstream.test/"), "POST", CIMultiDictProxy(CIMultiDict())
    )
    return aiohttp.ClientResponseError(
        info, (), status=status, message="m", headers=CIMultiDictProxy(CIMultiDict(headers))
    )


@pytest.mark.filterwarnings("error::DeprecationWarning")  # never touches the deprecated .code
def test_aiohttp_client_response_error() -> None:
    c = classify(_aiohttp_response_error(429, {"Retry-After": "7"}))
    assert shape(c) == retry(False, WaitHint(7.0, "retry_after"))
    assert shape(classify(_aiohttp_response_error(400, {}))) == NO
    assert shape(classify(_aiohttp_response_error(529, {}))) == retry(False)
    # ContentTypeError: a 200 whose body was not JSON; nothing about HTTP failed.
    info = aiohttp.RequestInfo(URL("http://u/"), "GET", CIMultiDictProxy(CIMultiDict()))
    assert classify(aiohttp.ContentTypeError(info, (), status=200)) is None


def test_fake_aiohttp_client_response_error() -> None:
    class ClientResponseError(Exception):  # the shape alone, as another client might have it
        def __init__(self, status: int, headers: Any) -> None:
            self.status = status
            self.headers = headers

    assert shape(classify(ClientResponseError(503, {"retry-after": "2"}))) == retry(
        True, WaitHint(2.0, "retry_after")
    )
    assert shape(classify(ClientResponseError(413, None))) == NO


def test_resilience_aiohttp_errors() -> None:
    from resilience.aiohttp import HTTPStatusError, RetryableHTTPStatus

    e = RetryableHTTPStatus(status=503, method="GET", url="http://u/", headers={"Retry-After": "4"})
    assert shape(classify(e)) == retry(True, WaitHint(4.0, "retry_after"))
    assert shape(classify(HTTPStatusError(status=422, method="GET", url="http://u/"))) == NO


AIOHTTP = [
    ("ClientConnectorError", "connect"),
    ("ClientConnectorDNSError", "connect"),
    ("ClientProxyConnectionError", "connect"),
    ("ConnectionTimeoutError", "connect"),
    ("ClientSSLError", "tls"),
    ("ClientConnectorSSLError", "tls"),
    ("ClientConnectorCertificateError", "tls"),
    ("ServerFingerprintMismatch", "tls"),
    ("SocketTimeoutError", "timeout"),
    ("ServerTimeoutError", "timeout"),
    ("ServerDisconnectedError", "network"),
    ("ClientOSError", "network"),
    ("ClientConnectionResetError", "network"),
    ("ClientConnectionError", "network"),
    ("ClientPayloadError", "network"),
    ("InvalidURL", "invalid"),
    ("InvalidUrlClientError", "invalid"),
    ("NonHttpUrlClientError", "invalid"),
]


@pytest.mark.parametrize(("name", "kind"), AIOHTTP)
def test_aiohttp_transport_errors(name: str, kind: str) -> None:
    cls = getattr(aiohttp, name)
    exc = cls.__new__(cls)  # the class is what counts; most need connection objects to build
    o = outcome_of(exc)
    assert o is not None
    assert o.transport == kind


async def test_aiohttp_real_sockets(refused_port: int, silent_port: int) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(f"http://127.0.0.1:{refused_port}/")
        assert shape(classify(info.value)) == retry(False)
        with pytest.raises(aiohttp.SocketTimeoutError) as info2:
            await session.get(f"http://127.0.0.1:{silent_port}/")
        assert shape(classify(info2.value)) == retry(True)
