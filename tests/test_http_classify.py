"""resilience.http classification: every status row, billing, x-should-retry, idempotency."""

from __future__ import annotations

import ast
import asyncio
import errno
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from resilience.http import (
    IDEMPOTENT_METHODS,
    Classification,
    Outcome,
    WaitHint,
    classify,
    is_idempotent,
    is_retryable_status,
    outcome_of,
    transport_kind,
)

# status -> (retryable, fault, processed) ------------------------------------------------------
STATUS_TABLE: dict[int, tuple[bool, str, bool]] = {
    400: (False, "caller", True),
    401: (False, "caller", True),
    402: (False, "caller", True),
    403: (False, "caller", True),
    404: (False, "caller", True),
    405: (False, "caller", True),
    408: (True, "upstream", True),
    409: (True, "caller", True),
    412: (False, "caller", True),
    413: (False, "caller", True),
    418: (False, "caller", True),
    422: (False, "caller", True),
    425: (True, "caller", True),
    429: (True, "upstream", False),
    431: (False, "caller", True),
    499: (False, "caller", True),
    500: (True, "upstream", True),
    501: (True, "upstream", True),
    502: (True, "upstream", True),
    503: (True, "upstream", True),
    504: (True, "upstream", True),
    505: (True, "upstream", True),
    520: (True, "upstream", True),
    529: (True, "upstream", False),
    599: (True, "upstream", True),
}


@pytest.mark.parametrize(("status", "expected"), sorted(STATUS_TABLE.items()))
def test_status_table(status: int, expected: tuple[bool, str, bool]) -> None:
    c = classify(Outcome(status=status))
    assert c is not None
    assert (c.retryable, c.fault, c.processed) == expected
    assert c.billed == c.processed
    assert c.reason == f"status {status}"
    assert is_retryable_status(status) == expected[0]


@pytest.mark.parametrize("status", sorted(STATUS_TABLE))
def test_not_idempotent_retries_only_what_was_not_processed(status: int) -> None:
    c = classify(Outcome(status=status), idempotent=False)
    assert c is not None
    assert c.retryable == (status in (429, 529))
    assert is_retryable_status(status, idempotent=False) == (status in (429, 529))


@pytest.mark.parametrize("status", [100, 200, 204, 301, 304, 399])
def test_success_is_no_failure(status: int) -> None:
    c = classify(Outcome(status=status, headers={"Retry-After": "5", "x-should-retry": "true"}))
    assert c == Classification(False, None, True, None, "success")
    assert not Outcome(status=status).failed


def test_wait_hint_only_on_retryable() -> None:
    h = {"retry-after-ms": "1500", "Retry-After": "9"}
    c = classify(Outcome(status=429, headers=h))
    assert c is not None
    assert c.wait == WaitHint(1.5, "retry_after")
    assert c.retry_after == 1.5
    c = classify(Outcome(status=400, headers=h))
    assert c is not None
    assert (c.retryable, c.wait, c.retry_after) == (False, None, None)
    c = classify(Outcome(status=503, headers={"x-ratelimit-reset-requests": "2s"}))
    assert c is not None
    assert c.wait == WaitHint(2.0, "rate_limit_header")
    c = classify(Outcome(status=503, headers={"Retry-After": "99999"}), max_delay=30)
    assert c is not None
    assert c.retry_after == 30.0


# Billing: a 429 about money fails fast --------------------------------------------------------

BILLING = [
    ("openai insufficient_quota type", "insufficient_quota", None),
    ("openai insufficient_quota code", None, "insufficient_quota"),
    ("openai billing_hard_limit_reached", None, "billing_hard_limit_reached"),
    ("anthropic enforced spend limit", "rate_limit_error", "enforced_spend_limit_reached"),
    ("anthropic contract spend limit", "rate_limit_error", "contract_spend_limit_reached"),
    ("anthropic billing_error", "billing_error", None),
]


@pytest.mark.parametrize(("etype", "code"), [b[1:] for b in BILLING], ids=[b[0] for b in BILLING])
def test_billing_429_fails_fast(etype: str | None, code: str | None) -> None:
    c = classify(
        Outcome(status=429, headers={"retry-after": "1"}, error_type=etype, error_code=code)
    )
    assert c is not None
    assert (c.retryable, c.fault, c.processed, c.wait) == (False, "caller", False, None)
    assert c.reason.startswith("billing: ")


def test_rate_limit_429_with_a_code_is_still_retried() -> None:
    for code in ("rate_limit_exceeded", "ramp_limit_exceeded", None):
        c = classify(Outcome(status=429, error_type="rate_limit_error", error_code=code))
        assert c is not None
        assert (c.retryable, c.fault) == (True, "upstream")


# x-should-retry wins --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "value", "expected"),
    [
        (429, "false", False),
        (503, "false", False),
        (400, "true", True),
        (404, " TRUE ", True),
        (500, "False", False),
        (500, "maybe", True),  # anything else is ignored
        (400, "", False),
    ],
)
def test_x_should_retry_wins(status: int, value: str, expected: bool) -> None:
    c = classify(Outcome(status=status, headers={"X-Should-Retry": value, "retry-after": "2"}))
    assert c is not None
    assert c.retryable is expected
    assert c.fault == STATUS_TABLE[status][1]  # the fault stays the status's
    assert c.retry_after == (2.0 if expected else None)


def test_x_should_retry_wins_over_billing_and_idempotency() -> None:
    c = classify(
        Outcome(status=429, headers={"x-should-retry": "true"}, error_code="insufficient_quota")
    )
    assert c is not None
    assert c.retryable
    c = classify(Outcome(status=500, headers={"x-should-retry": "true"}), idempotent=False)
    assert c is not None
    assert c.retryable
    c = classify(Outcome(transport="timeout", headers={"x-should-retry": "false"}))
    assert c is not None
    assert not c.retryable


# Error bodies without an error status (mid-stream error events) -------------------------------


@pytest.mark.parametrize(
    ("etype", "retryable"),
    [
        ("overloaded_error", True),
        ("api_error", True),
        ("server_error", True),
        ("timeout_error", True),
        ("rate_limit_error", True),
        ("invalid_request_error", False),
        ("something_new", False),
    ],
)
def test_error_body_without_status(etype: str, retryable: bool) -> None:
    for status in (None, 200):
        c = classify(Outcome(status=status, error_type=etype))
        assert c is not None
        assert (c.retryable, c.fault, c.processed) == (retryable, "upstream", True)
    c = classify(Outcome(error_code="insufficient_quota"))
    assert c is not None
    assert (c.retryable, c.fault) == (False, "caller")


# Transport kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("connect", (True, "upstream", False)),
        ("timeout", (True, "upstream", True)),
        ("network", (True, "upstream", True)),
        ("tls", (False, "upstream", False)),
        ("invalid", (False, "caller", False)),
    ],
)
def test_transport_table(kind: str, expected: tuple[bool, str, bool]) -> None:
    c = classify(Outcome(transport=kind))  # type: ignore[arg-type]
    assert c is not None
    assert (c.retryable, c.fault, c.processed) == expected
    c = classify(Outcome(transport=kind), idempotent=False)  # type: ignore[arg-type]
    assert c is not None
    assert c.retryable == (kind == "connect")


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as e:
        return e


BUILTINS = [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect"),
    (ConnectionResetError(), "network"),
    (ConnectionAbortedError(), "network"),
    (BrokenPipeError(), "network"),
    (ConnectionError("x"), "network"),
    (TimeoutError(), "timeout"),
    (asyncio.TimeoutError(), "timeout"),
    (socket.gaierror(-2, "Name or service not known"), "connect"),
    (ssl.SSLCertVerificationError("bad cert"), "tls"),
    (ssl.SSLEOFError("eof"), "network"),
    (OSError(errno.ECONNREFUSED, "refused"), "connect"),
    (OSError(errno.EHOSTUNREACH, "no route"), "connect"),
    (OSError(errno.ECONNRESET, "reset"), "network"),
    (OSError(errno.ETIMEDOUT, "timed out"), "timeout"),
    (OSError("Multiple exceptions: ..."), None),
    (FileNotFoundError(errno.ENOENT, "x"), None),
    (PermissionError(), None),
    (ValueError("x"), None),
    (RuntimeError("x"), None),
]


@pytest.mark.parametrize(("exc", "kind"), BUILTINS, ids=[type(e).__name__ for e, _ in BUILTINS])
def test_standard_library_errors(exc: BaseException, kind: str | None) -> None:
    assert transport_kind(exc) == kind
    o = outcome_of(exc)
    if kind is None:
        assert o is None
        assert classify(exc) is None
    else:
        assert o == Outcome(transport=kind)


def test_subclasses_of_standard_errors_in_user_code() -> None:
    class MyRefused(ConnectionRefusedError):
        pass

    assert transport_kind(MyRefused()) == "connect"


def test_cancellation_and_base_exceptions_carry_nothing() -> None:
    for exc in (asyncio.CancelledError(), KeyboardInterrupt(), SystemExit(1), GeneratorExit()):
        assert outcome_of(exc) is None
        assert classify(exc) is None


def test_library_errors_carry_nothing() -> None:
    from resilience import CircuitOpen, RateLimited, StoreUnavailable

    for exc in (CircuitOpen("b", 3.0), RateLimited("l", 1.0), StoreUnavailable("down")):
        assert classify(_raised(exc, ConnectionRefusedError())) is None


# Duck typing on attributes alone --------------------------------------------------------------


class StatusCodeError(Exception):
    def __init__(self, status_code: object, headers: object = None, body: object = None) -> None:
        self.status_code = status_code
        self.response = type("R", (), {"headers": headers})()
        self.body = body


class StatusError(Exception):  # aiohttp's shape
    def __init__(self, status: object, headers: object = None) -> None:
        self.status = status
        self.headers = headers


def test_duck_typed_status_errors() -> None:
    c = classify(StatusCodeError(429, {"retry-after-ms": "700"}))
    assert c is not None
    assert (c.retryable, c.retry_after) == (True, 0.7)
    c = classify(StatusError(503, [("Retry-After", "4")]))
    assert c is not None
    assert (c.retryable, c.retry_after) == (True, 4.0)
    c = classify(StatusCodeError(429, None, {"error": {"code": "insufficient_quota"}}))
    assert c is not None
    assert not c.retryable
    # Not a status: ignored.
    for bad in ("429", 42, 600, True, None, 429.0):
        assert classify(StatusCodeError(bad)) is None
        assert classify(StatusError(bad)) is None


def test_error_bodies_in_every_shape() -> None:
    shapes = [
        {"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "m"}},
        {"type": "insufficient_quota", "code": "insufficient_quota", "message": "m"},
        '{"error": {"code": "insufficient_quota"}}',
        b'{"error": {"code": "insufficient_quota"}}',
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
    ]
    for body in shapes:
        c = classify(outcome_of(StatusCodeError(429, {}, body)))
        assert c is not None
        assert (c.retryable, c.fault) == (False, "caller"), body
    # Success bodies and garbage are no error.
    for body in (
        {"type": "message", "id": "m"},
        {"type": "error"},
        "not json",
        b"\xff",
        [1],
        "x" * 100_000,
        {"error": "invalid_grant"},
    ):
        o = outcome_of(StatusCodeError(429, {}, body))
        assert o is not None
        assert (o.error_type, o.error_code) == (None, None), body


def test_response_objects() -> None:
    class Response:
        def __init__(self, status: int, headers: object) -> None:
            self.status = status
            self.headers = headers

    c = classify(Response(429, {"Retry-After": "3"}))
    assert c is not None
    assert (c.retryable, c.retry_after) == (True, 3.0)
    o = outcome_of(Response(429, {}), body={"error": {"code": "insufficient_quota"}})
    assert o is not None
    assert o.error_code == "insufficient_quota"
    c = classify(Response(200, {}))
    assert c is not None
    assert c.fault is None
    assert outcome_of(object()) is None
    assert outcome_of("429") is None
    assert classify({"status": 429}) is None


def test_raising_attributes_are_absent() -> None:
    class Nasty(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("no")

        @property
        def response(self) -> object:
            raise RuntimeError("no")

    assert classify(Nasty()) is None


def test_outcome_is_returned_as_is() -> None:
    o = Outcome(status=503)
    assert outcome_of(o) is o


def test_max_delay_is_validated() -> None:
    with pytest.raises(ValueError, match="max_delay"):
        classify(Outcome(status=429), max_delay=-1)


# Idempotency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS | {"get", "Put"}))
def test_idempotent_methods(method: str) -> None:
    assert is_idempotent(method)


@pytest.mark.parametrize(
    "headers",
    [
        {"Idempotency-Key": "k"},
        {"idempotency-key": "k"},
        [("IDEMPOTENCY-KEY", "k")],
        [(b"idempotency-key", b"k")],
    ],
)
def test_idempotency_key_makes_post_idempotent(headers: object) -> None:
    assert is_idempotent("POST", headers)
    assert is_idempotent("PATCH", headers)


def test_post_without_key_is_not_idempotent() -> None:
    for headers in (None, {}, {"Content-Type": "application/json"}, "Idempotency-Key", 3):
        assert not is_idempotent("POST", headers)
    assert not is_idempotent("PATCH")
    assert not is_idempotent(None)  # type: ignore[arg-type]


# Layering: no client is imported by resilience.http -------------------------------------------

_CLIENTS = (
    "aiohttp",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "openai",
    "anthropic",
    "multidict",
    "requests",
)


def test_no_module_imports_a_client() -> None:
    root = Path(__file__).resolve().parent.parent / "resilience" / "http"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.partition(".")[0]
                assert top not in _CLIENTS, f"{path.name} imports {name}"
                if top == "resilience":
                    assert name.startswith("resilience.http"), f"{path.name} imports {name}"


def test_importing_it_loads_no_client() -> None:
    code = (
        "import sys, resilience.http as h; "
        "h.classify(ConnectionRefusedError()); h.wait_hint({'retry-after': '1'}); "
        f"bad = [m for m in sys.modules if m.partition('.')[0] in {_CLIENTS!r}]; "
        "print(bad); assert not bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
