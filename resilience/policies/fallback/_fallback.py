"""The fallback: when the call fails in a way another upstream could fix, serve it from there.

Semantics of one call under ``Fallback([alt1, alt2, ...], on=..., on_result=...)``:

1. The protected call (the rest of the pipeline) runs once. Its result is returned, unless
   ``on_result`` flags it; an exception the trigger does not match propagates unchanged.
2. Otherwise the alternatives run in order, each with the call's arguments. The first one that
   returns a result ``on_result`` does not flag serves the call. An alternative that fails
   with an exception the trigger matches (or returns a flagged result) hands over to the next
   one; one that fails with any other exception ends the call with that exception.
3. When every alternative failed, the last failure propagates (with a PEP 678 note listing
   each failure); when the last one returned a flagged result, that result is returned (as
   :class:`resilience.Retry` does).

The trigger (``on=None``): see :mod:`resilience.policies._faults`: :class:`resilience.CircuitOpen`,
:class:`resilience.RateLimited`, and the upstream's faults; never the caller's, never
cancellation. ``asyncio.CancelledError`` is never caught: a cancelled call (primary or
alternative) propagates at once, and no further alternative runs.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from resilience import telemetry
from resilience.pipeline import CallContext, PolicyBase
from resilience.policies._faults import REASON_RESULT, Trigger, compile_trigger
from resilience.policies._validate import check_async_callables, check_callable, check_name
from resilience.policies.retry._retry import add_note

__all__ = ["Fallback", "alternative_name"]

T = TypeVar("T")
logger = logging.getLogger("resilience")

#: Alternatives whose signature has a keyword-only parameter of this name receive the failure.
EXCEPTION_PARAM = "exception"


def alternative_name(fn: object) -> str:
    """A readable, low-cardinality name of an alternative for notes and telemetry: its
    qualified name (a ``functools.partial``'s function's), else its type's name."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else type(target).__qualname__


def _wants_exception(fn: object) -> bool:
    try:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    p = sig.parameters.get(EXCEPTION_PARAM)
    return p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "result rejected by on_result"
    return f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__


class _Alternative:
    __slots__ = ("fn", "name", "wants_exception")

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn
        self.name = alternative_name(fn)
        self.wants_exception = _wants_exception(fn)

    def run(self, ctx: CallContext, exc: BaseException | None) -> Awaitable[Any]:
        if self.wants_exception:
            return self.fn(*ctx.args, **ctx.kwargs, **{EXCEPTION_PARAM: exc})
        return self.fn(*ctx.args, **ctx.kwargs)


class Fallback(PolicyBase):
    """Serve a failed call from an alternative: a second model, deployment or provider, a
    cache, a degraded answer.

    Usable as a decorator, through ``await fallback.call(fn, *args)``, and as a
    :class:`resilience.Pipeline` policy. Where it sits decides what it falls back from:
    ``Pipeline(Fallback(...), Retry(...), breaker, limiter)`` falls back once the retries are
    exhausted (or at once on :class:`resilience.CircuitOpen`); inside the retry,
    ``Pipeline(Retry(...), Fallback(...), breaker, limiter)``, every attempt falls back on its
    own (see ``docs/fallback.md``).

    Args:
        alternative: an async callable, or a non-empty list of them tried in order. Each is
            called with the protected call's arguments (``alt(*args, **kwargs)``); one whose
            signature has a keyword-only parameter named ``exception`` (``async def alt(*args,
            exception, **kwargs)``) also receives the failure that led to it (``None`` when
            ``on_result`` flagged a result). An alternative may carry its own policies (a
            function decorated by its own :class:`resilience.Pipeline`: its own breaker and
            limiter per provider).
        on: which failures trigger the fallback: an exception type, a tuple of types, or a
            predicate over the exception; taken literally, it replaces the default. Default:
            :func:`resilience.policies.fallback.default_trigger`:
            :class:`resilience.CircuitOpen`, :class:`resilience.RateLimited` and the upstream's
            faults (429 after retries, 5xx, 529, transport errors; see
            :mod:`resilience.policies._faults`), never the caller's (400, 413, 422, ...).
            ``asyncio.CancelledError`` never triggers.
        on_result: a predicate over a returned value: ``True`` means "returned, but unusable"
            (an empty completion, a ``{"error": ...}`` body): the next alternative runs.
        name: the policy's name in notes and telemetry (default ``"fallback"``).

    Raises:
        TypeError, ValueError: at construction, naming the offending parameter.
    """

    def __init__(
        self,
        alternative: Callable[..., Awaitable[Any]] | list[Callable[..., Awaitable[Any]]],
        *,
        on: Trigger | None = None,
        on_result: Callable[[Any], bool] | None = None,
        name: str | None = None,
    ) -> None:
        fns = check_async_callables("alternative", alternative)
        self.alternatives: tuple[Callable[..., Awaitable[Any]], ...] = tuple(fns)
        self._alternatives = tuple(_Alternative(fn) for fn in fns)
        self.on = on
        self._reason = compile_trigger("on", on)
        if on_result is not None:
            check_callable("on_result", on_result, "a predicate over the result")
        self.on_result = on_result
        self.name = "fallback" if name is None else check_name(name)

    def __repr__(self) -> str:
        alts = ", ".join(a.name for a in self._alternatives)
        return f"Fallback([{alts}], name={self.name!r})"

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Pipeline policy: run ``call``; on a trigger, the alternatives (see the class)."""
        try:
            result = await call()
        except Exception as exc:
            reason = self._reason(exc)
            if reason is None:
                raise
            return await self._serve(ctx, exc, None, reason)  # type: ignore[no-any-return]
        pred = self.on_result
        if pred is not None and pred(result):
            return await self._serve(ctx, None, result, REASON_RESULT)  # type: ignore[no-any-return]
        return result

    async def _serve(
        self, ctx: CallContext, exc: Exception | None, result: Any, reason: str
    ) -> Any:
        history = [f"  the call: {_describe(exc)}"]
        observed = ctx.observed
        pred = self.on_result
        last = len(self._alternatives)
        for index, alt in enumerate(self._alternatives, 1):
            logger.debug(
                "%s: %s of %s; trying alternative %d (%s)",
                self.name,
                reason,
                ctx.operation,
                index,
                alt.name,
            )
            if observed:
                telemetry.fallback_triggered(
                    ctx,
                    policy=self.name,
                    reason=reason,
                    error=exc,
                    alternative=alt.name,
                    index=index,
                )
            try:
                result = await alt.run(ctx, exc)
            except Exception as e:
                history.append(f"  alternative {index} ({alt.name}): {_describe(e)}")
                next_reason = self._reason(e)
                if next_reason is None or index == last:
                    why = "failed" if next_reason is None else "every alternative failed"
                    lines = [f"{self.name}: {why} for {ctx.operation}", *history]
                    add_note(e, "\n".join(lines))
                    raise
                exc, reason = e, next_reason
                continue
            if pred is not None and index < last and pred(result):
                history.append(f"  alternative {index} ({alt.name}): {_describe(None)}")
                exc, reason = None, REASON_RESULT
                continue
            if observed:
                telemetry.fallback_served(ctx, policy=self.name, alternative=alt.name, index=index)
            return result
        raise AssertionError("unreachable: Fallback has at least one alternative")
