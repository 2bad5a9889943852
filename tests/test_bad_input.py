"""Bad names, keys, prefixes and limits: an immediate ``TypeError``/``ValueError`` naming the
parameter, the same on ``MemoryStore`` and ``RedisStore``, and the store keeps working.

Issue 12, item 7: a lone surrogate used to be accepted by memory and to raise
``UnicodeEncodeError`` on every Redis call; ``key=123`` raised a raw ``TypeError`` from the key
escaper on Redis only, and ``key=0`` was silently the default key; ``limit=2**63-1`` made Redis
report ``remaining=-2**63``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilience import (
    CircuitBreaker,
    MemoryStore,
    RedisStore,
    Retry,
    RetryBudget,
    SlidingWindowLimiter,
    all_of,
)
from resilience.policies._validate import MAX_LIMIT, call_key, check_key, check_name
from resilience.stores.base import MAX_WEIGHT, WindowLimit
from resilience.stores.redis._keys import window_keys
from tests.redis_servers import RedisServer

SURROGATE = "tenant-\udcff"


@pytest.fixture
async def stores(redis_server: RedisServer, prefix: str) -> AsyncIterator[list[Any]]:
    """A memory store and a store on a real redis-server, side by side."""
    redis = RedisStore.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    yield [MemoryStore(), redis]
    await redis.aclose()


async def outcome(call: Callable[[], object]) -> tuple[str, str]:
    """What ``call()`` raised (type and message), awaited if it returns an awaitable."""
    try:
        result = call()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


# ------------------------------------------------------------------ names and prefixes


@pytest.mark.parametrize(
    "build",
    [
        lambda s: SlidingWindowLimiter(5, 1.0, store=s, name=SURROGATE),
        lambda s: CircuitBreaker(store=s, name=SURROGATE),
        lambda s: RetryBudget(store=s, name=SURROGATE),
        lambda s: SlidingWindowLimiter(5, 1.0, store=s, key=SURROGATE),
        lambda s: CircuitBreaker(store=s, key=SURROGATE),
        lambda s: all_of(SlidingWindowLimiter(5, 1.0, store=s, name="a"), name=SURROGATE),
        lambda s: Retry(3, name=SURROGATE),
    ],
)
async def test_a_lone_surrogate_in_a_name_or_key_fails_at_construction(
    stores: list[Any], build: Callable[[Any], object]
) -> None:
    got = [await outcome(functools.partial(build, s)) for s in stores]
    assert got[0] == got[1]
    kind, message = got[0]
    assert kind == "ValueError"
    assert message.split()[0] in ("name", "key")
    assert "surrogate" in message


async def test_a_lone_surrogate_in_a_prefix_fails_at_construction(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    for bad, exc in (
        (SURROGATE, ValueError),
        ("", ValueError),
        ("a{b", ValueError),
        (3, TypeError),
    ):
        with pytest.raises(exc, match=r"^prefix"):
            RedisStore(client, prefix=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^prefix.*surrogate"):
        RedisStore.from_url(redis_server.url, prefix=SURROGATE)
    await client.aclose()


# ------------------------------------------------------------------ per-call keys


BAD_KEYS: list[tuple[object, str]] = [
    (SURROGATE, "ValueError"),
    ("\ud800", "ValueError"),
    (123, "TypeError"),
    (0, "TypeError"),
    (b"tenant", "TypeError"),
    (1.5, "TypeError"),
    (["a"], "TypeError"),
]


@pytest.mark.parametrize(("key", "kind"), BAD_KEYS)
async def test_a_bad_per_call_key_fails_the_same_on_every_store(
    stores: list[Any], key: object, kind: str
) -> None:
    for name in ("try_acquire", "acquire", "penalize"):
        got = []
        for s in stores:
            lim = SlidingWindowLimiter(5, 60.0, store=s, name="k", guard=0)
            if name == "penalize":
                got.append(await outcome(functools.partial(lim.penalize, 1.0, key)))  # type: ignore[arg-type]
            else:
                got.append(await outcome(functools.partial(getattr(lim, name), key)))
        assert got[0] == got[1], (name, got)
        assert got[0][0] == kind, (name, got)
        assert got[0][1].startswith("key"), got
    for s in stores:  # nothing was recorded, and the store still works
        lim = SlidingWindowLimiter(5, 60.0, store=s, name="k", guard=0)
        assert (await lim.try_acquire()).remaining == 4
        assert (await lim.try_acquire("tenant")).remaining == 4


@pytest.mark.parametrize(("key", "kind"), BAD_KEYS)
async def test_a_key_callable_returning_a_bad_key_fails_the_same_on_every_store(
    stores: list[Any], key: object, kind: str
) -> None:
    got = []
    for s in stores:
        lim = SlidingWindowLimiter(5, 60.0, store=s, name="kc", guard=0, key=lambda k: k)

        @lim
        async def call(k: object) -> str:  # pragma: no cover - never admitted
            return "ran"

        got.append(await outcome(functools.partial(call, key)))
    assert got[0] == got[1]
    assert got[0][0] == kind
    assert got[0][1].startswith("key")


async def test_a_key_of_another_type_is_never_the_default_key(stores: list[Any]) -> None:
    # `key=0` used to mean the default key (`key or ""`): it now fails, and so does every
    # key that is not a str, whatever it would have collided with.
    for s in stores:
        lim = SlidingWindowLimiter(1, 60.0, store=s, name="zero", guard=0)
        with pytest.raises(TypeError, match=r"^key must be a str, or None"):
            await lim.try_acquire(0)  # type: ignore[arg-type]
        assert (await lim.try_acquire()).allowed
        assert (await lim.try_acquire("")).allowed is False  # "" is the default key


def test_the_validators_say_what_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"a str, a callable .* or None"):
        check_key(3)
    with pytest.raises(TypeError, match="a str, or None for the default key; got int"):
        call_key(3)
    with pytest.raises(ValueError, match="at index 7"):
        call_key(SURROGATE)
    with pytest.raises(ValueError, match=r"^name must not be empty"):
        check_name("")
    assert call_key(None) == ""
    assert call_key("é🙂") == "é🙂"
    assert check_key(None) is None
    assert check_key("k") == "k"

    class Tenant(str):
        pass

    assert call_key(Tenant("t")) == "t"


# ------------------------------------------------------------------ counts Lua keeps exactly


@pytest.mark.parametrize("limit", [2**63 - 1, 2**53, MAX_LIMIT + 1])
def test_a_limit_beyond_what_lua_counts_exactly_fails(limit: int) -> None:
    with pytest.raises(ValueError, match=r"^limit must be <= MAX_LIMIT = 2\*\*40"):
        SlidingWindowLimiter(limit, 1.0, store=MemoryStore())


async def test_the_largest_limit_and_cost_decide_the_same_on_every_store(
    stores: list[Any],
) -> None:
    got = []
    for s in stores:
        lim = SlidingWindowLimiter(MAX_LIMIT, 60.0, store=s, name="max", guard=0)
        a = await lim.try_acquire()
        b = await lim.try_acquire(cost=MAX_LIMIT - 1)
        c = await lim.try_acquire()
        d = await lim.try_acquire(key="other", cost=MAX_LIMIT)
        got.append([(x.allowed, x.remaining) for x in (a, b, c, d)])
        with pytest.raises(ValueError, match=r"^cost"):
            await lim.try_acquire(cost=MAX_LIMIT + 1)
    assert got[0] == got[1]
    assert got[0] == [(True, MAX_LIMIT - 1), (True, 0), (False, 0), (True, 0)]


async def _fill(store: Any, lim: WindowLimit, entries: int, now_us: int) -> None:
    """Give ``lim``'s log ``entries`` reservations of weight ``lim.limit``, one per window
    from now on (what that many waiters of the largest cost would have reserved)."""
    if isinstance(store, MemoryStore):
        log = store._log(lim, "")
        for i in range(entries):
            log.insert(now_us + i * lim.window_us, f"f{i}", lim.limit)
        return
    z, m = window_keys(store.prefix, lim.name, "")
    t: Any = await store.client.time()
    redis_now = t[0] * 1_000_000 + t[1]
    mapping = {f"f{i}:{lim.limit}": redis_now + i * lim.window_us for i in range(entries)}
    await store.client.zadd(z, mapping)
    await store.client.hset(m, "x", entries * (lim.limit - 1))
    await store.client.pexpire(z, 60_000)
    await store.client.pexpire(m, 60_000)


async def test_a_log_never_weighs_more_than_lua_counts_exactly(stores: list[Any]) -> None:
    # A log at the largest limit holding 2**12 windows' worth of reservations weighs 2**52:
    # one more unit would take it beyond (towards 2**53, where Lua's doubles round). Both
    # stores refuse it, however long the caller would wait.
    lim = WindowLimit("heavy", MAX_LIMIT, 60_000_000)
    got = []
    for s in stores:
        now_us = s._now_us() if isinstance(s, MemoryStore) else 0
        await _fill(s, lim, MAX_WEIGHT // MAX_LIMIT, now_us)
        r = await s.window_acquire((lim,), "", (1,), 10**15)
        got.append((r.allowed, r.token, r.remaining))
        assert r.wait_us > 0
    assert got[0] == got[1] == (False, "", 0)
