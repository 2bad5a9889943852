"""Keys are user data: braces, colons, spaces, unicode and 10 KB of text neither break
hash-tagging nor collide with another name's or key's state."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from resilience import RedisStore, SlidingWindowLimiter
from resilience.stores import FallbackStore
from resilience.stores.redis._keys import (
    breaker_keys,
    escape,
    presence_key,
    registry_key,
    registry_keys_key,
    window_keys,
)
from tests.redis_servers import RedisServer

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="{}:% #\\\n\t-_.aé😀", max_size=40),
    st.sampled_from(["", "{", "}", "{}", "a:b", "{a}:{b}", " ", "#" + "0" * 64, "x" * 10_000]),
    st.text(min_size=99, max_size=300),
)
_TOKEN = re.compile(r"[A-Za-z0-9._%#-]*")


def _tag(key: str) -> str:
    """The Redis Cluster hash tag of ``key`` (what key_slot hashes)."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


@given(HOSTILE, HOSTILE)
def test_escape_is_injective_and_inert(a: str, b: str) -> None:
    ea, eb = escape(a), escape(b)
    for e in (ea, eb):
        assert _TOKEN.fullmatch(e)
        assert not set(e) & set("{}: ")
        assert len(e) <= 100
    assert (ea == eb) == (a == b)


@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE)
def test_keys_share_one_tag_and_never_collide(n1: str, k1: str, n2: str, k2: str) -> None:
    a = [*window_keys("p", n1, k1), presence_key("p", n1, k1), *breaker_keys("p", n1, k1)]
    b = [*window_keys("p", n2, k2), presence_key("p", n2, k2), *breaker_keys("p", n2, k2)]
    for keys, key in ((a, k1), (b, k2)):
        for k in keys:
            assert k.count("{") == 1
            assert k.count("}") == 1
        # Every key of one limiter decision, for every name, lives in the key's slot.
        assert len({key_slot(k.encode()) for k in keys[:3]}) == 1
        assert _tag(keys[0]) == "rl:" + escape(key)
        assert len({key_slot(k.encode()) for k in keys[3:]}) == 1
    if (n1, k1) != (n2, k2):
        assert not set(a) & set(b)
    else:
        assert a == b


_examples = iter(range(10**9))


@pytest.mark.redis
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(k1=HOSTILE, k2=HOSTILE, name=HOSTILE)
async def test_hostile_keys_on_a_real_store(
    redis_server: RedisServer, prefix: str, k1: str, k2: str, name: str
) -> None:
    """Two keys, limit 1: each key has its own quota; no key corrupts another's state, and
    every key written is one of this limiter's (one prefix per example)."""
    p = f"{prefix}x{next(_examples)}"
    store = RedisStore.from_url(redis_server.url, prefix=p, timeout=2.0)
    name = name or "n"
    lim = SlidingWindowLimiter(1, 60.0, store=store, name=name, guard=0)
    assert (await lim.try_acquire(k1)).allowed
    second = await lim.try_acquire(k2)
    assert second.allowed == (k1 != k2)
    assert not (await lim.try_acquire(k1)).allowed
    assert lim.store is not store
    assert isinstance(lim.store, FallbackStore)
    await asyncio.gather(*lim.store.fleet.tasks)  # the presence announcements
    written = {k.decode() for k in await store.client.keys(f"{p}:*")}  # type: ignore[union-attr]
    expected: set[str] = set()
    for k in {k1, k2}:
        expected.update(window_keys(p, name, k))
        expected.add(presence_key(p, name, k))
    # The limiter registers itself and the keys it saw, in the background (resilience.admin).
    expected |= {registry_key(p, "e"), registry_key(p, "t"), registry_keys_key(p, "limiter", name)}
    assert written <= expected
    assert window_keys(p, name, k1)[0] in written
    await store.aclose()
