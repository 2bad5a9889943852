"""Hedging: when the first attempt is slow, race a second one; the first success wins.

Semantics of one call under ``Hedge(after=..., max_hedges=n, alternative=..., safe=...)``:

1. If the call is not known to be safe to send twice (see ``safe`` on :class:`Hedge`), it
   runs once, as if there were no ``Hedge``.
2. Otherwise the first attempt starts. Whenever no attempt has finished ``after`` seconds
   after the last one started, and fewer than ``max_hedges`` hedges were started, another
   attempt starts (hedge ``k``, 1-based): the same call (the rest of the pipeline: the
   limiter and breaker inside the ``Hedge`` see it as one more call: a hedge spends quota)
   or, with ``alternative``, the ``k``-th alternative (cycling), called with the call's
   arguments.
3. The first attempt to *finish* decides, unless it failed with an exception the trigger
   matches (``on=``; by default :class:`resilience.CircuitOpen`,
   :class:`resilience.RateLimited` and the upstream's faults, as for
   :class:`resilience.Fallback`): then the race goes on, and the next hedge (if any) starts
   at once. A success is returned; any other exception propagates. When every attempt failed
   with a matched exception, the last one to fail propagates, with a PEP 678 note.
4. The losers are cancelled and **awaited** before the call returns or raises, so their
   ``finally`` blocks (a limiter's reservation, a breaker's probe permit, a connection) have
   run by then. If the caller is cancelled, every attempt is cancelled and awaited the same
   way (a second cancellation stops the waiting, not the clean-up inside the attempts).

Attempts run in tasks of their own (with copies of the caller's context variables); the first
attempt runs directly in the caller's task only when the call is not hedged. All attempts share
the call's :class:`resilience.CallContext`: place :class:`resilience.Retry` *outside* the
``Hedge`` (``Pipeline(Retry(...), Hedge(...), breaker, limiter)``), not inside it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from resilience import telemetry
from resilience.http import is_idempotent
from resilience.pipeline import CallContext, PolicyBase
from resilience.policies._faults import Trigger, compile_trigger
from resilience.policies._validate import (
    MAX_SECONDS,
    check_async_callables,
    check_callable,
    check_name,
    non_negative_seconds,
    positive_int,
)
from resilience.policies.retry._retry import add_note

__all__ = ["Hedge"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

#: ``after`` as a callable: receives the number of the hedge about to start (1-based).
DelaySpec = float | int | Callable[[int], float]
#: ``safe``: ``None`` (decide from the call), a bool, or a predicate over the call's arguments.
SafeSpec = bool | Callable[..., bool] | None


def http_request_of(ctx: CallContext) -> Any:
    """The HTTP request a call carries (the first argument with a str ``method`` and
    ``headers``: what :mod:`resilience.httpx` and :mod:`resilience.aiohttp` pass), or ``None``."""
    if not ctx.args:
        return None
    req = ctx.args[0]
    if isinstance(getattr(req, "method", None), str) and hasattr(req, "headers"):
        return req
    return None


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has finished (its clean-up done). A cancellation
    of the caller meanwhile stops the waiting (not the clean-up) and propagates."""
    if not tasks:
        return
    for t in tasks:
        t.cancel()
        t.add_done_callback(_retrieve)
    await asyncio.wait(tasks)


class Hedge(PolicyBase):
    """Race a slow call against a second (third, ...) attempt; the first success wins.

    Usable as a decorator, through ``await hedge.call(fn, *args)``, and as a
    :class:`resilience.Pipeline` policy. Policies *inside* it run once per attempt: in
    ``Pipeline(Hedge(after=0.5), breaker, limiter)`` every hedge passes the breaker and takes a
    limiter permit (hedges spend quota, and a refused hedge is simply not run).

    Args:
        after: seconds to wait for the attempts in flight before starting the next hedge (a
            number ``>= 0``), or a callable receiving the number of the hedge about to start
            (1-based) and returning those seconds (e.g. the observed p95 latency).
        max_hedges: the most extra attempts per call (``>= 1``).
        alternative: what a hedge runs instead of the same call: an async callable taking the
            call's arguments, or a non-empty list of them (hedge ``k`` runs
            ``alternative[(k - 1) % len(alternative)]``). An alternative does not pass the
            policies inside the ``Hedge``: give it its own pipeline. Default: the same call.
        safe: whether the call may be sent more than once. ``None`` (default): an HTTP request
            (the first argument has a ``method`` and ``headers``, as with the httpx transport
            and the aiohttp middleware) is safe when idempotent
            (:func:`resilience.http.is_idempotent`: GET, PUT, ... or an ``Idempotency-Key``);
            any other call is **not** hedged until the caller says so. ``True``/``False``, or a
            predicate over the call's arguments.
        on: which failures of an attempt let the race go on (the next hedge starts at once):
            as ``on`` of :class:`resilience.Fallback` (default: refusals and upstream faults).
            Any other exception ends the call.
        name: the policy's name in notes and telemetry (default ``"hedge"``).

    Raises:
        TypeError, ValueError: at construction, naming the offending parameter.
    """

    def __init__(
        self,
        after: DelaySpec,
        *,
        max_hedges: int = 1,
        alternative: Callable[..., Awaitable[Any]]
        | Sequence[Callable[..., Awaitable[Any]]]
        | None = None,
        safe: SafeSpec = None,
        on: Trigger | None = None,
        name: str | None = None,
    ) -> None:
        if callable(after):
            self._after_fixed: float | None = None
        else:
            self._after_fixed = non_negative_seconds("after", after)
        self.after = after
        self.max_hedges = positive_int("max_hedges", max_hedges)
        self.alternatives: tuple[Callable[..., Awaitable[Any]], ...] = (
            () if alternative is None else tuple(check_async_callables("alternative", alternative))
        )
        if not (safe is None or isinstance(safe, bool)):
            check_callable("safe", safe, "None, a bool, or a predicate over the call's arguments")
        self.safe = safe
        self.on = on
        self._handled = compile_trigger("on", on)
        self.name = "hedge" if name is None else check_name(name)
        self._warned = False

    def __repr__(self) -> str:
        return (
            f"Hedge(after={self.after!r}, max_hedges={self.max_hedges}, "
            f"alternatives={len(self.alternatives)}, name={self.name!r})"
        )

    def _is_safe(self, ctx: CallContext) -> bool:
        safe = self.safe
        if isinstance(safe, bool):
            return safe
        if safe is not None:
            return bool(safe(*ctx.args, **ctx.kwargs))
        req = http_request_of(ctx)
        if req is not None and is_idempotent(req.method, req.headers):
            return True
        if not self._warned:
            self._warned = True
            logger.warning(
                "%s: %s is not known to be safe to send twice: not hedged (pass safe=True "
                "to Hedge if it is)",
                self.name,
                ctx.operation,
                extra={"policy": self.name, "operation": ctx.operation},
            )
        return False

    def _delay(self, number: int) -> float:
        if self._after_fixed is not None:
            return self._after_fixed
        d = self.after(number)  # type: ignore[operator]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= MAX_SECONDS:
            raise ValueError(
                f"after returned {d!r} for hedge {number}: it must return a number of seconds "
                f"in [0, {MAX_SECONDS:g}]"
            )
        return float(d)

    def _attempt(
        self, call: Callable[[], Awaitable[T]], ctx: CallContext, number: int
    ) -> Awaitable[T]:
        if number == 0:
            return call()
        alts = self.alternatives
        run: Callable[[], Awaitable[T]] = call
        if alts:
            alt = alts[(number - 1) % len(alts)]
            run = functools.partial(alt, *ctx.args, **ctx.kwargs)
        if ctx.observed:
            return telemetry.instrument_hedge(run, ctx, policy=self.name, number=number)
        return run()

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Pipeline policy: run ``call``, hedged when it is slow (see the class)."""
        if not self._is_safe(ctx):
            return await call()
        loop = asyncio.get_running_loop()
        numbers: dict[asyncio.Task[Any], int] = {}
        pending: set[asyncio.Task[Any]] = set()
        started = 0
        winner = -1
        errors: list[tuple[int, Exception]] = []

        def start(number: int) -> None:
            task = asyncio.ensure_future(self._attempt(call, ctx, number), loop=loop)
            numbers[task] = number
            pending.add(task)

        start(0)
        try:
            while True:
                timeout: float | None = None
                if started < self.max_hedges:
                    timeout = self._delay(started + 1)
                    if ctx.deadline is not None and time.monotonic() + timeout >= ctx.deadline:
                        timeout = None  # the hedge would start past the deadline
                done, _ = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    started += 1
                    start(started)
                    continue
                for task in sorted(done, key=numbers.__getitem__):
                    pending.discard(task)
                    exc = task.exception()  # CancelledError if cancelled by someone else
                    if exc is None:
                        winner = numbers[task]
                        return task.result()  # type: ignore[no-any-return]
                    if not isinstance(exc, Exception) or self._handled(exc) is None:
                        raise exc
                    errors.append((numbers[task], exc))
                if started < self.max_hedges:
                    started += 1
                    start(started)
                elif not pending:
                    last = errors[-1][1]
                    lines = [f"{self.name}: every attempt of {ctx.operation} failed"]
                    lines += [f"  attempt {n}: {type(e).__qualname__}: {e}" for n, e in errors]
                    add_note(last, "\n".join(lines))
                    raise last
        finally:
            # Also when the caller was cancelled: the losers' clean-up is awaited; a further
            # cancellation meanwhile stops the waiting and propagates (never swallowed).
            await _cancel_all(pending)
            if started and ctx.observed:
                telemetry.hedge_settled(ctx, policy=self.name, winner=winner, started=started)
