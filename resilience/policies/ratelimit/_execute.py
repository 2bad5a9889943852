"""The limiter as a pipeline policy: the permit, the call, and what the upstream's answer teaches.

One call through :meth:`execute`: the key and the costs; a permit (the memory store's
synchronous shortcut when there is room now, else the store's decision, bounded by the call's
deadline and the limiter's ``timeout``); the protected call; then, from its answer:

- an exception that asks for a wait (:func:`resilience.policies._hints.requested_wait`: a
  ``retry_after``, or an upstream 429's ``retry-after-ms``/``Retry-After``/rate-limit reset)
  pauses the key for that long, fleet-wide;
- an answer carrying rate-limit headers (a response, or an exception with one) is followed
  (:mod:`resilience.policies.ratelimit._follow`: an exhausted quota pauses the key, a lower
  provider limit is adopted), unless ``follow_upstream=False``;
- the time from admission to answer feeds the adaptive guard
  (:mod:`resilience.policies.ratelimit._guard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from resilience.errors import ResilienceError, library_error
from resilience.pipeline import CallContext, resolve_key
from resilience.policies._hints import requested_wait
from resilience.policies._validate import MAX_SECONDS, call_key
from resilience.policies.ratelimit._decision import FOREVER_US, _call_costs

if TYPE_CHECKING:
    from resilience.policies.ratelimit._limiter import _WindowPolicy

__all__ = ["call_and_learn", "execute"]

T = TypeVar("T")
logger = logging.getLogger("resilience")


async def execute(self: _WindowPolicy, call: Callable[[], Awaitable[T]], ctx: CallContext) -> T:
    """Pipeline policy: wait for a permit (bounded by the call's deadline), then call.

    If the call fails with an exception that asks for a wait (a ``retry_after`` attribute,
    or an upstream 429 whose headers carry ``retry-after-ms``, ``Retry-After`` or a
    rate-limit reset, from any HTTP client or AI SDK: see
    :func:`resilience.policies._hints.requested_wait`), the key is paused for that long,
    fleet-wide. Rate-limit headers on the answer are followed (see
    :mod:`resilience.policies.ratelimit._follow`).
    """
    if self._settle is not None:  # reserve, call, settle: see _reserve.py
        return await self._execute_settled(call, ctx)
    spec = self._key
    if spec is None:
        key = ""
    elif type(spec) is str:
        key = spec  # checked at construction
    else:
        key = call_key(resolve_key(spec, ctx), "key returned by the key callable")
    costs = self._static_costs or _call_costs(self._cost_specs, self._limits, ctx)
    # The happy path on a local store: room now, admitted without a coroutine (nothing to
    # wait for, nothing to release, no telemetry to record). Anything else (a wait, a
    # refusal, telemetry on, a shared store) goes through the store's window_acquire.
    admit = self._admit
    admitted: bool | None = False
    # (A key new to the registry, or an operator's hold of the name: via _acquire.)
    if admit is not None and not ctx.observed and key in self._seen and not self._held_until:
        admitted = admit(self._limits, key, costs, self._merge)
        if admitted is None:  # the store's turn to let the event loop run
            await asyncio.sleep(0)
            admitted = admit(self._limits, key, costs, self._merge)
    if not admitted:
        bound = self._timeout
        if ctx.deadline is not None:
            left = max(ctx.deadline - time.monotonic(), 0.0)
            bound = left if bound is None else min(bound, left)
        max_wait = FOREVER_US if bound is None else int(bound * 1e6)
        await self._acquire(key, costs, max_wait, ctx)
    if not self._adaptive:
        return await call_and_learn(self, call, key, ctx)
    t_admit = time.monotonic()
    try:
        result = await call_and_learn(self, call, key, ctx)
    except Exception:
        self._answered(time.monotonic() - t_admit)
        raise
    self._answered(time.monotonic() - t_admit)
    return result


async def call_and_learn(
    self: _WindowPolicy, call: Callable[[], Awaitable[T]], key: str, ctx: CallContext
) -> T:
    """Call; then act on the answer: a wait hint pauses the key, rate-limit headers are
    followed (a no-op without headers)."""
    follow = self._follow
    try:
        result = await call()
    except Exception as exc:
        hint = None if library_error(exc) is not None else requested_wait(exc)
        if hint is not None and hint.seconds > 0:
            try:
                await self.penalize(min(hint.seconds, MAX_SECONDS), key)
            except ResilienceError:
                logger.warning("rate limiter %r: could not record a penalty", self.name)
        if follow is not None:
            await follow.seen(exc, key, ctx, pause=hint is None)
        raise
    if follow is not None and getattr(result, "headers", None) is not None:
        await follow.seen(result, key, ctx, pause=True)
    return result
