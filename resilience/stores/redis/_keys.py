"""How logical identities become Redis keys (the Redis store's; other stores have their own).

Names and keys are user data (tenant ids, model names, URLs): they may contain ``{``, ``}``,
``:``, spaces, unicode or kilobytes of text. :func:`escape` maps any string to a short,
printable token that cannot contain a hash-tag brace or a separator, and distinct strings to
distinct tokens, so no key can break hash-tagging or collide with another name's state:

- characters outside ``[A-Za-z0-9._-]`` are percent-encoded (UTF-8), so ``{``, ``}``, ``:`` and
  ``%`` never appear raw;
- a result longer than 100 characters is replaced by ``#`` and the SHA-256 of the original
  (``#`` is itself always percent-encoded, so the two forms never meet).

Key layout (``P`` is the store's prefix)::

    P:{rl:<key>}:<name>        rate-limiter log (zset)
    P:{rl:<key>}:<name>:m      rate-limiter meta (hash: extra weight, penalty end, expiry)
    P:{rl:<key>}:<name>:p      deciders sharing that quota (zset; local fallback's share)
    P:{rb:<name>}              retry budget (hash: per-second request/retry buckets)
    P:{cb:<name>:<key>}:s      circuit breaker state (hash), :f failures (zset), :p leases
    P:breaker-events           pub/sub channel of breaker transitions (not a key)
    P:{cc:<key>}:<name>:h      concurrency limit holders (zset), :q queue, :e waiter leases,
                               :n arrival counter
    P:concurrency-events       pub/sub channel of "your turn" messages to waiters (not a key)
    P:{reg}:e                  registry: "<kind>:<name>" -> settings (hash, JSON values)
    P:{reg}:t                  registry: "<kind>:<name>" -> when last registered (hash, us)
    P:{reg}:k:<kind>:<name>    registry: keys seen (zset, scored by when last seen)
    P:{reg}:h                  operator holds: limiter name -> end (hash, us)
    P:{reg}:a                  audit log of operator actions (list, newest first)
    P:registry-events          pub/sub channel of hold changes (not a key)

The registry lives under one hash tag (``{reg}``): one Cluster slot holds it whole, so each of
its scripts runs on one node, and it is written at a bounded rate (see
:mod:`resilience.stores.redis._registry`).

The hash tag of a limiter is its *key* (the tenant), not its name: every limiter for one tenant
lands in one Redis Cluster slot, so ``all_of(rpm, tpm)`` is checked and charged in one script,
while different tenants spread over the cluster.

Every name, key and prefix must be *text* (see :mod:`resilience.stores._text`): policies check
names and keys before they reach a store, and :func:`check_prefix` checks the prefix.
"""

from __future__ import annotations

import hashlib
import re

from resilience.stores._text import check_text, show

__all__ = [
    "breaker_channel",
    "breaker_keys",
    "breaker_tag",
    "budget_key",
    "check_prefix",
    "concurrency_channel",
    "concurrency_keys",
    "concurrency_tag",
    "escape",
    "presence_key",
    "registry_channel",
    "registry_key",
    "registry_keys_key",
    "window_channel",
    "window_keys",
]

_SAFE = re.compile(r"[A-Za-z0-9._-]*")
_MAX = 100


def check_prefix(prefix: object) -> str:
    """A store's key prefix: a non-empty ``str`` of text without ``{`` or ``}`` (a brace would
    change the hash tag of every key in Redis Cluster)."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"prefix must be a non-empty str without braces, got {show(prefix)}")
    return check_text(prefix, "prefix")


def escape(text: str) -> str:
    """Return a short token for ``text``: printable, brace- and colon-free, injective."""
    if _SAFE.fullmatch(text) is None:
        text = "".join(
            ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
            for ch in text
        )
    if len(text) > _MAX:
        return "#" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def window_keys(prefix: str, name: str, key: str) -> tuple[str, str]:
    """The (log, meta) keys of limiter ``name`` for ``key``."""
    base = f"{prefix}:{{rl:{escape(key)}}}:{escape(name)}"
    return base, base + ":m"


def window_channel(prefix: str) -> str:
    """The pub/sub channel on which ``window_settle.lua`` announces freed units: each message
    is the log key of the limit and key whose entry weighs less now."""
    return f"{prefix}:window-events"


def budget_key(prefix: str, name: str) -> str:
    """The hash of retry budget ``name`` (one key: its own hash tag)."""
    return f"{prefix}:{{rb:{escape(name)}}}"


def breaker_keys(prefix: str, name: str, key: str) -> tuple[str, str, str]:
    """The (state hash, failure log, probe leases) keys of breaker ``name`` for ``key``.

    ``P:{cb:<name>:<key>}:s|f|p``: the three share one hash tag, so every breaker script runs
    in one Redis Cluster slot (``escape`` never emits ``:``, so name and key cannot collide).
    """
    base = f"{prefix}:{{cb:{escape(name)}:{escape(key)}}}"
    return base + ":s", base + ":f", base + ":p"


def presence_key(prefix: str, name: str, key: str) -> str:
    """The presence zset of limiter ``name`` for ``key`` (same hash tag as its log)."""
    return f"{prefix}:{{rl:{escape(key)}}}:{escape(name)}:p"


def breaker_channel(prefix: str) -> str:
    """The pub/sub channel on which the breaker scripts announce transitions (one per prefix).

    Each message is ``<tag> <gen> <state>``: ``tag`` is the hash tag of the breaker's state key
    without braces (``cb:<name>:<key>``, escaped), ``gen`` the generation after the transition
    and ``state`` the new state, or ``*`` for an operator action (always re-read).
    """
    return f"{prefix}:breaker-events"


def breaker_tag(name: str, key: str) -> str:
    """The ``tag`` of breaker ``name`` for ``key`` in :func:`breaker_channel` messages."""
    return f"cb:{escape(name)}:{escape(key)}"


def concurrency_keys(prefix: str, name: str, key: str) -> tuple[str, str, str, str]:
    """The (holders, queue, waiter leases, arrival counter) keys of concurrency limit
    ``name`` for ``key`` (one hash tag per tenant key, as the limiter's)."""
    base = f"{prefix}:{{cc:{escape(key)}}}:{escape(name)}"
    return base + ":h", base + ":q", base + ":e", base + ":n"


def concurrency_channel(prefix: str) -> str:
    """The pub/sub channel on which the concurrency scripts tell waiters it is their turn."""
    return f"{prefix}:concurrency-events"


def concurrency_tag(name: str, key: str) -> str:
    """The ``tag`` of concurrency limit ``name`` for ``key`` in :func:`concurrency_channel`
    messages (``escape`` emits neither spaces nor colons)."""
    return f"cc:{escape(key)}:{escape(name)}"


def registry_key(prefix: str, part: str) -> str:
    """Registry key ``part`` (``e``, ``t``, ``h`` or ``a``: see the module docs)."""
    return f"{prefix}:{{reg}}:{part}"


def registry_keys_key(prefix: str, kind: str, name: str) -> str:
    """The zset of the keys registry entry ``(kind, name)`` has seen."""
    return f"{prefix}:{{reg}}:k:{kind}:{escape(name)}"


def registry_channel(prefix: str) -> str:
    """The pub/sub channel on which ``lua/registry_hold.lua`` announces hold changes."""
    return f"{prefix}:registry-events"
