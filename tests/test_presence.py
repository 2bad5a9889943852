"""Presence and fair shares: each decider learns the live set's size and its own rank (the
stores' part: ``tests/conformance/test_presence.py``), and the shares computed from one set add
up to exactly the limit (some 0 when there are more deciders than the limit); a fallback
decision always suspends the calling task once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import pytest

from resilience import RateLimited, SlidingWindowLimiter, StoreUnavailable
from resilience.stores import FallbackStore, fair_share
from resilience.stores._fleet import member_id
from resilience.stores.base import Presence, WindowLimit, WindowResult


def _ids(n: int) -> list[str]:
    return [member_id() for _ in range(n)]


def test_member_ids_sort_by_creation_time() -> None:
    a = member_id()
    time.sleep(0.002)
    b = member_id()
    assert a < b
    assert len(a) == len(b) == 30
    assert set(a + b) <= set("0123456789abcdef")


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 20, 100])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 30])
def test_fair_shares_add_up_to_the_limit(limit: int, n: int) -> None:
    shares = [fair_share(limit, Presence(n, i)) for i in range(n)]
    assert sum(shares) == limit
    assert max(shares) - min(shares) <= 1
    assert all(s >= 0 for s in shares)


class _Down:
    """A primary that is down for decisions but tells its presence reading."""

    label = "down"

    def __init__(self, reading: dict[str, tuple[Presence, ...]]) -> None:
        self.reading = reading

    async def window_acquire(
        self, limits: Sequence[WindowLimit], key: str, costs: Sequence[int], max_wait_us: int
    ) -> WindowResult:
        raise StoreUnavailable("down")

    async def presence_announce(
        self, names: Sequence[str], key: str, member: str, ttl_us: int
    ) -> tuple[Presence, ...]:
        return self.reading.get(key, ())


async def _fallback(reading: dict[str, tuple[Presence, ...]]) -> FallbackStore:
    fs = FallbackStore(_Down(reading), "local", presence_interval=60.0)  # type: ignore[arg-type]
    limits = (WindowLimit("q", 2, 1_000_000),)
    for key in reading:
        fs.fleet.announce(limits, key)
    await asyncio.gather(*fs.fleet.tasks)
    return fs


@pytest.mark.parametrize(("rank", "share"), [(0, 1), (1, 1), (2, 0), (3, 0)])
async def test_local_share_by_rank(rank: int, share: int) -> None:
    """limit 2, 4 deciders: ranks 0 and 1 admit 1 per window, ranks 2 and 3 refuse
    (``RateLimited`` from ``acquire``, never a silent admission)."""
    fs = await _fallback({"": (Presence(4, rank),)})
    lim = SlidingWindowLimiter(2, 1.0, store=fs, name="q", guard=0)
    assert fs.share(lim._limits, "")[0].limit == share
    admitted = [(await lim.try_acquire()).allowed for _ in range(3)]
    assert admitted.count(True) == share
    if share == 0:
        with pytest.raises(RateLimited) as info:
            await lim.acquire(timeout=5.0)
        assert info.value.retry_after == pytest.approx(1.0)


async def test_unknown_key_uses_the_largest_set_seen() -> None:
    fs = await _fallback({"a": (Presence(2, 1),), "b": (Presence(4, 3),)})
    limits = (WindowLimit("q", 2, 1_000_000),)
    assert fs.presence(limits, "never") == (Presence(4, 3),)
    assert fs.share(limits, "never")[0].limit == 0
    assert fs.share(limits, "a")[0].limit == 1


async def test_a_smaller_reading_waits_one_ttl() -> None:
    """Right after a Redis restart the first announcers see only themselves: the previous,
    larger reading (count and rank) is kept until it is older than a TTL."""
    now = [0.0]
    primary = _Down({"": (Presence(4, 3),)})
    fs = FallbackStore(primary, "local", presence_interval=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    limits = (WindowLimit("q", 2, 1_000_000),)
    fs.fleet.announce(limits, "")
    await asyncio.gather(*fs.fleet.tasks)
    primary.reading[""] = (Presence(1, 0),)
    now[0] = 1.5
    fs.fleet.announce(limits, "")
    await asyncio.gather(*fs.fleet.tasks)
    assert fs.presence(limits, "") == (Presence(4, 3),)
    now[0] = 3.5  # the 4-member reading is now older than the TTL (3 s)
    fs.fleet.announce(limits, "")
    await asyncio.gather(*fs.fleet.tasks)
    assert fs.presence(limits, "") == (Presence(1, 0),)


@pytest.mark.parametrize("mode", ["local", "allow", "deny"])
async def test_every_fallback_decision_suspends(mode: str) -> None:
    fs = FallbackStore(_Down({}), mode)  # type: ignore[arg-type]
    lim = SlidingWindowLimiter(10**9, 1.0, store=fs, name="y", guard=0)
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(other())
    await asyncio.sleep(0)
    for _ in range(100):
        with contextlib.suppress(StoreUnavailable):
            await lim.try_acquire()
    t.cancel()
    assert ticks >= 100


async def test_a_store_answering_bare_counts_gets_the_smallest_share() -> None:
    """A store still answering counts only (no rank): this decider is read as ranking last,
    whose share is ``limit // n``, so the shares still add up to at most the limit."""
    fs = await _fallback({"": (3,)})  # type: ignore[dict-item]
    limits = (WindowLimit("q", 5, 1_000_000),)
    assert fs.presence(limits, "") == (Presence(3, 2),)
    assert fs.share(limits, "")[0].limit == 1
