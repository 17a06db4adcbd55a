"""Fan-out of a session's events to its live subscribers, each with a bounded backlog:
a subscriber that cannot keep up loses partials first and is cut off when finals pile up,
and the speaker's session never waits for it."""
from __future__ import annotations

import asyncio
from collections import deque

from streamrnn_client.protocol import ErrorCode

DROPPABLE = {"partial", "suggestions"}  # superseded by later events; finals and end never are


class Subscription:
    """One subscriber's events not yet sent; `None` marks the end of the session."""

    def __init__(self, max_events: int, max_finals: int):
        self.max_events, self.max_finals = max_events, max_finals
        self.events: deque[dict | None] = deque()
        self.finals = 0
        self.dropped = 0
        self.ready = asyncio.Event()
        self.cut = asyncio.Event()  # set when it was cut off for being too slow

    def put(self, event: dict) -> bool:
        """Queue an event; False when this subscriber is (now) cut off."""
        if self.cut.is_set():
            return False
        if event["type"] in DROPPABLE and len(self.events) >= self.max_events:
            self.dropped += 1
            return True
        if event["type"] == "final":
            if self.finals >= self.max_finals:
                self.cut_off()
                return False
            self.finals += 1
        self.events.append(event)
        self.ready.set()
        return True

    def cut_off(self) -> None:
        self.events.clear()
        self.events.extend([self.error(), None])
        self.ready.set()
        self.cut.set()

    def error(self) -> dict:
        return {"type": "error", "code": ErrorCode.TOO_SLOW,
                "message": f"the subscriber fell more than {self.max_finals} finals behind and was cut off"}

    def end(self) -> None:
        self.events.append(None)
        self.ready.set()

    async def get(self) -> dict | None:
        while not self.events:
            self.ready.clear()
            await self.ready.wait()
        event = self.events.popleft()
        if event is not None and event["type"] == "final":
            self.finals -= 1
        return event


class Hub:
    def __init__(self):
        self.subscriptions: set[Subscription] = set()

    def subscribe(self, max_events: int, max_finals: int) -> Subscription:
        subscription = Subscription(max_events, max_finals)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def publish(self, events: list[dict]) -> list[Subscription]:
        """Queue the events for every subscriber; returns those cut off by this."""
        cut = [s for s in self.subscriptions if not all([s.put(e) for e in events])]
        self.subscriptions.difference_update(cut)
        return cut

    def close(self) -> None:
        for subscription in self.subscriptions:
            subscription.end()
        self.subscriptions.clear()
