"""The real ``openai`` and ``anthropic`` SDKs as the demo's and the AI benchmark's client.

Four ways to make one job's call through the SDK (the *contenders* of ``benchmarks/ai_sdk.py``;
the demo's ``naive`` mode is ``"sdk"``, its ``resilience`` mode ``"resilience"``):

- ``"sdk"``: the SDK's defaults (``max_retries=2``: the SDK's own retry loop), nothing else;
- ``"tenacity"``: SDK ``max_retries=0`` under the usual ``@retry(stop=stop_after_attempt(6),
  wait=wait_random_exponential(multiplier=1, max=60))`` of tenacity (the OpenAI cookbook's);
- ``"resilience"``: SDK ``max_retries=0`` under ``Pipeline(Retry(...), CircuitBreaker(...),
  SlidingWindowLimiter(...))`` used as a decorator around the SDK call, every classification
  left to the defaults (no ``retry_on``, no ``failure_on``, no glue);
- ``"transport"``: SDK ``max_retries=0``, the same three policies in
  ``resilience.httpx2.ResilientTransport`` under the SDK's ``httpx2.AsyncClient``.

Every SDK import happens in the functions, so that ``resilience.demo`` imports without them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from resilience.demo._queues import Queue

__all__ = [
    "APIS",
    "CONTENDERS",
    "MODELS",
    "Api",
    "Attempt",
    "AttemptLog",
    "Built",
    "Contender",
    "JobCall",
    "complete",
    "drain",
    "lost_reason",
    "make_call",
    "make_client",
    "make_policies",
    "require_sdk",
    "status_of",
]

Api = Literal["openai", "anthropic"]
Contender = Literal["sdk", "tenacity", "resilience", "transport"]
APIS: tuple[Api, ...] = ("openai", "anthropic")
CONTENDERS: tuple[Contender, ...] = ("sdk", "tenacity", "resilience", "transport")

#: The model names the calls use (the fake server accepts any).
MODELS: dict[Api, str] = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
#: Output tokens asked for per call.
MAX_TOKENS = 16

JobCall = Callable[[int], Awaitable[Any]]


def require_sdk(api: Api) -> None:
    """``ImportError`` naming the package to install when ``api``'s SDK is missing."""
    try:
        __import__(api)
        __import__("httpx2")
    except ImportError as exc:
        raise ImportError(
            f"--api {api} needs the {api!r} package: pip install 'resilience[demo-ai]'"
        ) from exc


def make_client(
    api: Api,
    server_url: str,
    *,
    max_retries: int | None = None,
    http_client: Any = None,
    timeout: float = 30.0,
) -> Any:
    """An ``AsyncOpenAI`` or ``AsyncAnthropic`` client of the fake server at ``server_url``
    (``max_retries=None``: the SDK's default)."""
    kw: dict[str, Any] = {"api_key": "test", "timeout": timeout}
    if max_retries is not None:
        kw["max_retries"] = max_retries
    if http_client is not None:
        kw["http_client"] = http_client
    if api == "openai":
        import openai

        return openai.AsyncOpenAI(base_url=server_url + "/v1", **kw)
    import anthropic

    return anthropic.AsyncAnthropic(base_url=server_url, **kw)


async def complete(client: Any, api: Api, job: int) -> Any:
    """One job: one non-streaming chat call through the SDK."""
    messages = [{"role": "user", "content": f"Summarize job {job} in one sentence."}]
    if api == "openai":
        return await client.chat.completions.create(
            model=MODELS[api], messages=messages, max_tokens=MAX_TOKENS
        )
    return await client.messages.create(model=MODELS[api], messages=messages, max_tokens=MAX_TOKENS)


def make_policies(
    store: Any,
    name: str,
    *,
    limit: int,
    window: float,
    attempts: int = 6,
    deadline: float = 60.0,
    listeners: Iterable[Any] = (),
) -> tuple[Any, Any, Any]:
    """``Retry(attempts, deadline)``, ``CircuitBreaker()``, ``SlidingWindowLimiter(limit,
    window)`` on ``store``: every other option, classification included, left to its default."""
    from resilience import CircuitBreaker, Retry, SlidingWindowLimiter

    return (
        Retry(attempts=attempts, deadline=deadline),
        CircuitBreaker(store=store, name=name, listeners=listeners),
        SlidingWindowLimiter(limit, window, store=store, name=name),
    )


def lost_reason(exc: BaseException) -> str:
    """How a lost job is counted (:func:`resilience.demo._workers.failure_reason`), tenacity's
    ``RetryError`` named with the error of its last attempt."""
    from resilience.demo._workers import failure_reason

    last = getattr(exc, "last_attempt", None)
    inner = last.exception() if last is not None and hasattr(last, "exception") else None
    if isinstance(inner, BaseException):
        return f"{type(exc).__name__}({failure_reason(inner)})"
    return failure_reason(exc)


def status_of(exc: BaseException | None) -> int | str:
    """An attempt's outcome for the logs: 200, the HTTP status, or the exception's type."""
    if exc is None:
        return 200
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    return type(exc).__name__


#: One attempt of a worker's function: ``(job, start, end, outcome)``.
Attempt = tuple[int, float, float, int | str]


@dataclass
class AttemptLog:
    """Each attempt a worker's function made, its start and end on ``time.monotonic`` (the
    same clock in every process of a machine, and the fake server's), for the benchmark's
    429 analysis."""

    attempts: list[Attempt] = field(default_factory=list)

    async def timed(self, job: int, aw: Awaitable[Any]) -> Any:
        start = time.monotonic()
        try:
            result = await aw
        except BaseException as exc:
            self.attempts.append((job, start, time.monotonic(), status_of(exc)))
            raise
        self.attempts.append((job, start, time.monotonic(), 200))
        return result


@dataclass
class Built:
    """A contender's call, and what must be closed afterwards."""

    call: JobCall
    client: Any
    policies: tuple[Any, ...] = ()

    async def aclose(self) -> None:
        await self.client.close()


def make_call(
    contender: Contender,
    api: Api,
    server_url: str,
    *,
    store: Any = None,
    name: str = "ai",
    limit: int = 30,
    window: float = 2.0,
    attempts: int = 6,
    deadline: float = 60.0,
    listeners: Iterable[Any] = (),
    log: AttemptLog | None = None,
    on_attempt: Callable[[int], None] | None = None,
) -> Built:
    """Build ``contender``'s call of one job (see the module's docs).

    ``log`` records every attempt of the function (for ``"resilience"`` and ``"tenacity"``,
    each retry; for the others, each call); ``on_attempt(job)`` is called before each.
    """
    log = log if log is not None else AttemptLog()

    def attempt(job: int) -> None:
        if on_attempt is not None:
            on_attempt(job)

    if contender == "sdk":
        client = make_client(api, server_url)  # max_retries: the SDK's default (2)

        async def sdk_call(job: int) -> Any:
            attempt(job)
            return await log.timed(job, complete(client, api, job))

        return Built(sdk_call, client)

    if contender == "tenacity":
        from tenacity import retry, stop_after_attempt, wait_random_exponential

        client = make_client(api, server_url, max_retries=0)

        @retry(
            stop=stop_after_attempt(attempts), wait=wait_random_exponential(multiplier=1, max=60)
        )
        async def tenacity_call(job: int) -> Any:
            attempt(job)
            return await log.timed(job, complete(client, api, job))

        return Built(tenacity_call, client)

    if store is None:
        from resilience import MemoryStore

        store = MemoryStore()
    policies = make_policies(
        store,
        name,
        limit=limit,
        window=window,
        attempts=attempts,
        deadline=deadline,
        listeners=listeners,
    )

    if contender == "resilience":
        from resilience import Pipeline

        client = make_client(api, server_url, max_retries=0)

        @Pipeline(*policies)
        async def resilient_call(job: int) -> Any:
            attempt(job)
            return await log.timed(job, complete(client, api, job))

        return Built(resilient_call, client, policies)

    if contender == "transport":
        import httpx2

        from resilience.httpx2 import ResilientTransport

        http_client = httpx2.AsyncClient(transport=ResilientTransport(*policies))
        client = make_client(api, server_url, max_retries=0, http_client=http_client)

        async def transport_call(job: int) -> Any:
            attempt(job)
            return await log.timed(job, complete(client, api, job))

        return Built(transport_call, client, policies)

    raise ValueError(f"contender must be one of {CONTENDERS}, got {contender!r}")


async def drain(
    queue: Queue,
    call: JobCall,
    tasks: int,
    *,
    on_done: Callable[[int], None],
    on_lost: Callable[[int, BaseException], None],
) -> None:
    """``tasks`` concurrent tasks, each taking jobs from ``queue`` until it is empty; a job is
    done when ``call`` returns, lost when it raises (no requeue: what the function did is all
    there is)."""

    async def task() -> None:
        while (item := await queue.get()) is not None:
            job = item[0]
            try:
                await call(job)
            except Exception as exc:
                on_lost(job, exc)
            else:
                on_done(job)
            await queue.done()

    await asyncio.gather(*(task() for _ in range(tasks)))
