"""The policy protocol and the pipeline that composes policies.

A *policy* wraps one call: it may run it, run it again, make it wait, or refuse it. A
:class:`Pipeline` nests policies in the order given, **the first policy being the outermost**
(as in Polly v8's pipeline builder)::

    pipeline = Pipeline(Retry(attempts=5), breaker, limiter)

Here each retry attempt passes the breaker and then takes a limiter permit, so retries are
rate-limited and counted by the breaker like any other call.

Writing your own policy means implementing :class:`Policy`: one ``async`` method ``execute``
that receives the rest of the chain as a zero-argument coroutine function and the call's
:class:`CallContext`.

:class:`CallContext` is defined in the leaf module :mod:`resilience._context` (telemetry reads
it too, and must not import this module) and re-exported here.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from resilience import telemetry
from resilience._context import CallContext

_enabled = telemetry.enabled
_instrument_call = telemetry.instrument_call
_instrument_attempt = telemetry.instrument_attempt
__all__ = ["CallContext", "KeySpec", "Pipeline", "Policy", "PolicyBase", "resolve_key"]

P = ParamSpec("P")
T = TypeVar("T")

#: A key selects which shared state a policy uses (per tenant, per model, ...): a fixed string,
#: or a callable that receives the protected call's arguments and returns a string.
KeySpec = str | Callable[..., str] | None


@runtime_checkable
class Policy(Protocol):
    """The protocol every policy implements.

    ``execute`` must either return what ``call()`` returned (possibly after calling it several
    times), or raise. It must let :class:`asyncio.CancelledError` propagate untouched.
    """

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Run ``call`` (the rest of the chain) under this policy."""
        ...


def resolve_key(spec: KeySpec, ctx: CallContext) -> str | None:
    """Turn a :data:`KeySpec` into the key of one call (``None`` means the policy's default)."""
    if spec is None or isinstance(spec, str):
        return spec
    key = spec(*ctx.args, **ctx.kwargs)
    if not isinstance(key, str):
        raise TypeError(f"key callable must return a str, got {type(key).__name__}")
    return key


def _check_async(fn: object, what: str = "fn") -> None:
    target = fn.func if isinstance(fn, functools.partial) else fn
    if not (
        inspect.iscoroutinefunction(target)
        or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
    ):
        raise TypeError(
            f"{what} must be an async function (async def); got {fn!r}. "
            "resilience policies protect coroutines only."
        )


class PolicyBase:
    """Mixin that makes a policy usable alone: as a decorator and through ``await p.call(fn)``."""

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function with this policy alone."""
        return Pipeline(self)(fn)  # type: ignore[arg-type]

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one call of ``fn(*args, **kwargs)`` under this policy alone."""
        solo: Pipeline | None = getattr(self, "_solo_pipeline", None)
        if solo is None:
            solo = Pipeline(self)  # type: ignore[arg-type]
            with contextlib.suppress(AttributeError):  # a policy with __slots__: no cache
                self._solo_pipeline = solo
        return await solo.call(fn, *args, **kwargs)


class Pipeline:
    """Policies composed in order; the first one given is the outermost.

    A pipeline is itself a :class:`Policy` (pipelines nest), a decorator for async functions
    (signature and type preserved), and runs single calls with :meth:`call`.

    Args:
        *policies: objects implementing :class:`Policy`.
        name: the operation name used in telemetry; default: the function's qualified name.
    """

    __slots__ = ("_has_attempts", "name", "policies")

    def __init__(self, *policies: Policy, name: str | None = None) -> None:
        for i, p in enumerate(policies):
            if not callable(getattr(p, "execute", None)):
                raise TypeError(
                    f"policies[{i}] ({p!r}) does not implement the Policy protocol "
                    "(an async execute(call, ctx) method)"
                )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.name = name
        # A policy that starts attempts itself (Retry) sets `starts_attempts = True`; without
        # one, the pipeline runs exactly one attempt. A nested pipeline answers for its own
        # policies (the `starts_attempts` property below), so `Pipeline(Pipeline(Retry()))`
        # opens one span per attempt, not an extra one around them all.
        self._has_attempts = any(getattr(p, "starts_attempts", False) for p in policies)

    @property
    def starts_attempts(self) -> bool:
        """Whether a policy of this pipeline (at any depth) starts attempts itself (a retrier).

        An enclosing pipeline reads it: without such a policy it counts the whole call as one
        attempt (one attempt span); with one, each attempt the retrier starts is its own.
        """
        return self._has_attempts

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.policies)
        return f"Pipeline({inner})"

    def _chain(
        self, call: Callable[[], Awaitable[T]], ctx: CallContext
    ) -> Callable[[], Awaitable[T]]:
        for policy in reversed(self.policies):
            call = functools.partial(policy.execute, call, ctx)
        return call

    async def execute(self, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
        """Run ``call`` under every policy of this pipeline (a pipeline nests as a policy)."""
        return await self._chain(call, ctx)()

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one call of ``fn(*args, **kwargs)`` through the pipeline."""
        qualname = str(getattr(fn, "__qualname__", "call"))
        ctx = CallContext(self.name or qualname, args, kwargs)
        chain = self._chain(functools.partial(fn, *args, **kwargs), ctx)
        if not _enabled():
            ctx.observed = False
            return await chain()
        if not self._has_attempts:
            chain = functools.partial(_instrument_attempt, chain, ctx)
        return await _instrument_call(chain, ctx, function=qualname, pipeline=self.name)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function: every call of it runs through the pipeline.

        The wrapper keeps ``fn``'s signature, name and docstring (``functools.wraps``) and its
        type (``ParamSpec``). Everything that does not depend on the call's arguments is
        computed here, once, so a call costs a context object, one ``functools.partial`` per
        policy but the outermost (which the wrapper calls itself), and the policies' own work.
        """
        _check_async(fn)
        qualname = str(getattr(fn, "__qualname__", "call"))
        op = self.name or qualname
        pname = self.name
        # Innermost first; a pipeline without policies runs the call as its one "policy".
        execs = tuple(p.execute for p in reversed(self.policies)) or (_just_call,)
        inner, outer = execs[:-1], execs[-1]
        has_attempts = self._has_attempts
        partial = functools.partial
        enabled = _enabled
        instrument_call = _instrument_call
        instrument_attempt = _instrument_attempt

        if not inner:

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                ctx = CallContext(op, args, kwargs)
                run = partial(fn, *args, **kwargs) if args or kwargs else fn
                if not enabled():
                    ctx.observed = False
                    return await outer(run, ctx)
                chain: Callable[[], Awaitable[T]] = partial(outer, run, ctx)
                if not has_attempts:
                    chain = partial(instrument_attempt, chain, ctx)
                return await instrument_call(chain, ctx, function=qualname, pipeline=pname)

            return wrapper

        @functools.wraps(fn)
        async def wrapper_n(*args: P.args, **kwargs: P.kwargs) -> T:
            ctx = CallContext(op, args, kwargs)
            chain: Callable[[], Awaitable[T]] = (
                partial(fn, *args, **kwargs) if args or kwargs else fn
            )
            for ex in inner:
                chain = partial(ex, chain, ctx)
            if not enabled():
                ctx.observed = False
                return await outer(chain, ctx)
            chain = partial(outer, chain, ctx)
            if not has_attempts:
                chain = partial(instrument_attempt, chain, ctx)
            return await instrument_call(chain, ctx, function=qualname, pipeline=pname)

        return wrapper_n


def _just_call(call: Callable[[], Awaitable[T]], ctx: CallContext) -> Awaitable[T]:
    """The policy of a pipeline without policies: the call itself (no coroutine of its own)."""
    return call()
