"""The store's concurrency gate (``resilience/_gate.py``): a bound, FIFO, cancellation-safe."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience._gate import Gate


async def _hold(gate: Gate, seconds: float, log: list[str], name: str) -> None:
    if not gate.try_enter():
        await gate.enter()
    log.append(name)
    try:
        await asyncio.sleep(seconds)
    finally:
        gate.leave()


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots"):
        Gate(0)


@settings(max_examples=40, deadline=None)
@given(
    slots=st.integers(1, 5),
    plan=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_never_more_than_slots_holders_and_no_slot_lost(
    slots: int, plan: list[tuple[int, bool]], seed: int
) -> None:
    # Tasks enter, hold for 0-3 loop turns and leave; some are cancelled at a random moment
    # (while queueing, right after being handed a slot, or while holding it). The number of
    # holders never exceeds `slots`, and at the end every slot is free again.
    async def main() -> None:
        gate = Gate(slots)
        rng = random.Random(seed)
        holders = [0]
        peak = [0]

        async def worker(turns: int) -> None:
            if not gate.try_enter():
                await gate.enter()
            holders[0] += 1
            peak[0] = max(peak[0], holders[0])
            try:
                for _ in range(turns):
                    await asyncio.sleep(0)
            finally:
                holders[0] -= 1
                gate.leave()

        tasks = []
        for turns, cancel in plan:
            t = asyncio.create_task(worker(turns))
            tasks.append(t)
            if cancel:
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
                t.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        assert peak[0] <= slots
        assert gate.free == slots
        assert not gate._waiters

    asyncio.run(main())


async def test_waiters_are_served_first_come_first_served() -> None:
    gate = Gate(1)
    log: list[str] = []
    first = asyncio.create_task(_hold(gate, 0.01, log, "first"))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(_hold(gate, 0, log, f"w{i}")) for i in range(5)]
    await asyncio.sleep(0)
    # A newcomer finds a waiter queueing: it never overtakes, even if a slot is free.
    assert not gate.try_enter()
    await asyncio.gather(first, *waiters)
    assert log == ["first", "w0", "w1", "w2", "w3", "w4"]
    assert gate.free == 1


async def test_a_waiter_cancelled_after_being_handed_the_slot_passes_it_on() -> None:
    gate = Gate(1)
    assert gate.try_enter()
    log: list[str] = []
    a = asyncio.create_task(_hold(gate, 0, log, "a"))
    b = asyncio.create_task(_hold(gate, 0, log, "b"))
    await asyncio.sleep(0)  # both queue
    gate.leave()  # hands the slot to a ...
    a.cancel()  # ... which is cancelled before it runs
    await asyncio.wait_for(asyncio.gather(a, b, return_exceptions=True), 2)
    assert log == ["b"]
    assert gate.free == 1
