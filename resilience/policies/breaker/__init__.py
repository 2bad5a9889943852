"""The circuit breaker (shared through the store) and pybreaker interop.

:class:`CircuitBreaker`: "``failure_threshold`` failures within ``window`` seconds open it for
``break_duration`` seconds", counted fleet-wide when its store is shared.

Semantics (the same on every store; times on the store's clock, Redis ``TIME`` for
:class:`resilience.RedisStore`):

- **Closed.** Calls run. A failure is logged with its time; when the failures of the last
  ``window`` seconds reach ``failure_threshold``, the breaker opens. Successes are not
  recorded (count mode): they neither reset nor dilute the count.
- **Open.** Calls fail fast with :class:`resilience.CircuitOpen` (``retry_after`` = seconds
  until the break ends) for ``break_duration`` seconds, or longer if the failure that tripped
  it (or one arriving while open) carried an upstream ``retry_after`` hint.
- **Half-open.** After the break, at most ``half_open_max_calls`` probes run at once across
  everything sharing the store; other calls fail fast. A failed probe reopens the breaker;
  ``success_threshold`` successful probes close it. A probe permit expires after
  ``probe_lease`` seconds, so a crashed prober cannot wedge the breaker.
- **Generations.** Every transition starts a new generation; the outcome of a call that
  started in an earlier one is ignored (no double counting across a trip or a re-close).
- **Exactly once.** Each transition is made by one atomic store operation, so it happens
  once fleet-wide; listeners and telemetry fire only in the process that made it.
- **Cancellation** is never a failure and never leaks a probe permit. A caller cancelled at
  any point keeps every promise made for it: a probe cancelled while it runs returns its
  permit at once; a store operation it had started (acquire, the record of an outcome, an
  operator action) is shielded and completes in the background, so a granted probe is
  returned, an outcome is still recorded, and a transition that operation made is still
  reported (listeners, log, telemetry; the span event only if the call's span is still
  open). Listeners of a transition all run even if the caller is cancelled while an
  ``async`` one runs (the rest run in the background).
- **Lost state.** A process that learned an open deadline refuses calls until it, even if
  the store forgets the breaker (a Redis restart without persistence, a flush): a missing
  state reads as generation 0, older than any transition, and is not a close. The process
  then re-seeds the store with the open state it knew (same generation, same deadline), in
  the background, so the rest of the fleet is refused too. A close that is written (a
  successful probe, an operator's ``close`` or ``reset``) is obeyed at once, even one
  written after the loss.
- **Durations** (``window``, ``break_duration``, ``max_break_duration``, ``probe_lease``,
  ``open(duration=...)``) are at least :data:`MIN_DURATION` (1 ms): stores count whole
  microseconds and expire keys in milliseconds, and a duration rounding to 0 would silently
  disable what it bounds (a zero probe lease lets every caller probe).

Round trips to a shared store: while the process believes the breaker closed, calls are
admitted locally and that belief is refreshed at most every ``state_refresh`` seconds (and
after every recorded failure), so successes cost no round trip; a process told "open for
12.3 s more" fails fast locally until then without asking again.

Staleness: a store that pushes transitions (:meth:`resilience.stores.base.BreakerOps.
breaker_subscribe`; :class:`resilience.RedisStore` over pub/sub) lets a breaker with
``state_refresh > 0`` drop what it believes about a key as soon as any process makes a
transition there (a trip, a re-open, a probe phase, a close, an operator action), so its next
call asks the store: a trip elsewhere reaches this process within the pub/sub delivery time
(milliseconds). The breaker subscribes on its first round trip in a running event loop. Until
the subscription is established, while it is down (Redis unreachable: it reconnects in the
background, then forgets every "closed" it learned meanwhile) and on stores that push nothing,
the bound is ``state_refresh``: a process may still admit calls for up to that long after a
trip elsewhere. A known open deadline is kept until it passes (an operator's ``close``
elsewhere is pushed too).

Layout (the modules with a leading underscore are private): ``breaker.py`` the policy, its
call path and operator methods; ``_options.py`` the validated settings and public types;
``_view.py`` what this process believes per key and the known open deadlines; ``_sync.py``
pushed transitions and re-seeding a lost open state; ``_report.py`` transitions to
telemetry, the log and listeners; ``_promises.py`` what a cancelled caller is still owed;
``_tasks.py`` the background tasks; ``interop.py`` :class:`PyBreakerPolicy`.
"""

from resilience.policies.breaker._breaker import (
    DEFAULT_STATE_REFRESH,
    MIN_DURATION,
    BreakerState,
    CircuitBreaker,
    StateChange,
    StateListener,
)
from resilience.policies.breaker._interop import PyBreakerPolicy, pybreaker_policy

__all__ = [
    "DEFAULT_STATE_REFRESH",
    "MIN_DURATION",
    "BreakerState",
    "CircuitBreaker",
    "PyBreakerPolicy",
    "StateChange",
    "StateListener",
    "pybreaker_policy",
]
