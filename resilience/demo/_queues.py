"""The job queues the workers drain: in memory (one process) or a Redis list (a fleet)."""

from __future__ import annotations

from typing import Any

__all__ = ["MemoryQueue", "Queue", "RedisQueue"]


class Queue:
    """What workers need from a job queue; ``done`` feeds the progress bar."""

    async def get(self) -> tuple[int, int] | None:  # (job id, times requeued)
        raise NotImplementedError

    async def put_back(self, job: int, requeues: int) -> None:
        raise NotImplementedError

    async def done(self) -> None:
        raise NotImplementedError


class MemoryQueue(Queue):
    def __init__(self, jobs: int) -> None:
        self.items: list[tuple[int, int]] = [(i, 0) for i in range(jobs)]
        self.items.reverse()
        self.finished = 0

    async def get(self) -> tuple[int, int] | None:
        return self.items.pop() if self.items else None

    async def put_back(self, job: int, requeues: int) -> None:
        self.items.insert(0, (job, requeues))

    async def done(self) -> None:
        self.finished += 1


class RedisQueue(Queue):
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:jobs"
        self.done_key = f"{prefix}:done"

    async def get(self) -> tuple[int, int] | None:
        raw = await self.client.lpop(self.key)
        if raw is None:
            return None
        job, requeues = (int(x) for x in raw.decode().split(":"))
        return job, requeues

    async def put_back(self, job: int, requeues: int) -> None:
        await self.client.rpush(self.key, f"{job}:{requeues}")

    async def done(self) -> None:
        await self.client.incr(self.done_key)
