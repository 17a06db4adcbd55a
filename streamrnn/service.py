"""The engine as a service: named live sessions, engine work off the event
loop, events fanned out to subscribers. Both transports sit on this."""
from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import telemetry
from .audio import AudioError
from .engine import Recognizer, Session, SessionOptions
from .hub import Hub


class ServiceError(Exception):
    """An error for the client: a machine-readable code and a message naming the problem."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def event(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass
class LiveSession:
    id: str
    session: Session
    hub: Hub = field(default_factory=Hub)
    notify: object = None  # async callable(events) that reaches the session's own client


class RecognitionService:
    def __init__(self, recognizer: Recognizer, max_sessions: int = 256):
        self.recognizer = recognizer
        self.max_sessions = max_sessions
        self.sessions: dict[str, LiveSession] = {}
        # One engine thread: torch work is serialised and the event loop stays free.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="engine")

    async def run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def open(self, options: SessionOptions, transport: str) -> LiveSession:
        if len(self.sessions) >= self.max_sessions:
            raise ServiceError("busy", f"the server is at its limit of {self.max_sessions} sessions")
        try:
            session = self.recognizer.session(options)
        except (AudioError, ValueError) as err:
            raise ServiceError("bad_config", str(err)) from err
        live = LiveSession(uuid.uuid4().hex, session)
        self.sessions[live.id] = live
        telemetry.SESSIONS_ACTIVE.set(len(self.sessions))
        telemetry.SESSIONS_TOTAL.labels(transport).inc()
        return live

    async def feed(self, live: LiveSession, audio: bytes) -> list[dict]:
        started = time.perf_counter()
        try:
            events = await self.run(live.session.feed, audio)
        except AudioError as err:
            raise ServiceError("bad_audio", str(err)) from err
        except ValueError as err:
            raise ServiceError("session_closed", str(err)) from err
        elapsed = time.perf_counter() - started
        telemetry.CHUNK_LATENCY.observe(elapsed)
        telemetry.COMPUTE_SECONDS.inc(elapsed)
        telemetry.AUDIO_SECONDS.inc(len(audio) / live.session.bytes_per_second)
        return self.publish(live, events)

    async def finish(self, live: LiveSession, reason: str = "eof") -> list[dict]:
        """Last final, then `end` with why it ended (eof, disconnect, shutdown); subscribers are
        told and the session is forgotten."""
        try:
            end = {"type": "end", "session_id": live.id, "reason": reason}
            events = await self.run(live.session.finish) + [end]
            return self.publish(live, events)
        finally:
            self.close(live)

    def close(self, live: LiveSession) -> None:
        if self.sessions.pop(live.id, None) is not None:
            live.hub.close()
            telemetry.SESSIONS_ACTIVE.set(len(self.sessions))

    def publish(self, live: LiveSession, events: list[dict]) -> list[dict]:
        telemetry.FINALS.inc(sum(e["type"] == "final" for e in events))
        live.hub.publish(events)
        return events

    def subscribe(self, session_id: str) -> tuple[LiveSession, asyncio.Queue]:
        live = self.sessions.get(session_id)
        if live is None:
            raise ServiceError("unknown_session", f"no live session with id {session_id!r}")
        return live, live.hub.subscribe()

    async def suggest(self, text: str, count: int | None) -> list[dict]:
        return await self.guarded(self.recognizer.suggest, text, count)

    async def score(self, text: str) -> dict:
        return await self.guarded(self.recognizer.score, text)

    async def recognize(self, options: SessionOptions, audio: bytes) -> list[dict]:
        live = self.open(options, "unary")
        events = await self.feed(live, audio)
        return events + await self.finish(live)

    async def guarded(self, function, *args):
        try:
            return await self.run(function, *args)
        except ValueError as err:
            raise ServiceError("bad_request", str(err)) from err

    async def drain(self) -> None:
        """Finish every open session (their finals reach clients and subscribers)."""
        for live in list(self.sessions.values()):
            events = await self.finish(live, "shutdown")
            if live.notify:
                await live.notify(events)
