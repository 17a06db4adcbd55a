"""Fan-out of a session's events to its live subscribers."""
from __future__ import annotations

import asyncio


class Hub:
    """Each subscriber gets its own queue; `None` marks the end of the session."""

    def __init__(self):
        self.queues: set[asyncio.Queue] = set()

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.queues.discard(queue)

    def publish(self, events: list[dict]) -> None:
        for queue in self.queues:
            for event in events:
                queue.put_nowait(event)

    def close(self) -> None:
        for queue in self.queues:
            queue.put_nowait(None)
        self.queues.clear()
