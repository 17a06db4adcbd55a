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
from .auth import new_secret, same_secret
from .batcher import Batcher
from .config import BatchingConfig, LimitsConfig
from .engine import Recognizer, Session, SessionOptions
from .hub import Hub, Subscription


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
    read_token: str = field(default_factory=new_secret)  # what a subscriber must show
    audio_bytes: int = 0
    opened: float = field(default_factory=time.monotonic)

    def started_event(self) -> dict:
        return {"type": "session", "session_id": self.id, "read_token": self.read_token}


class RecognitionService:
    def __init__(self, recognizer: Recognizer, max_sessions: int = 256, limits: LimitsConfig | None = None,
                 batching: BatchingConfig | None = None):
        self.recognizer = recognizer
        self.max_sessions = max_sessions
        self.limits = limits or LimitsConfig()
        self.sessions: dict[str, LiveSession] = {}
        # Session audio goes through the batcher's engine thread; LM-only requests (suggest,
        # score) through this one. Either way the event loop stays free.
        batching = batching or BatchingConfig()
        self.batcher = Batcher(recognizer, batching.max_batch, batching.max_wait_ms)
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

    @property
    def idle_timeout(self) -> float | None:
        """Seconds a client may stay silent (for asyncio.wait_for); None: no limit."""
        return self.limits.idle_timeout_s or None

    async def feed(self, live: LiveSession, audio: bytes) -> list[dict]:
        """The chunk's events; at the session's audio limit, its last final and `end` too."""
        self.check_pace(live, len(audio))
        audio, at_limit = self.within_duration(live, audio)
        started = time.perf_counter()
        try:
            events = await self.batcher.submit(live.session, audio)
        except AudioError as err:
            raise ServiceError("bad_audio", str(err)) from err
        except ValueError as err:
            raise ServiceError("session_closed", str(err)) from err
        elapsed = time.perf_counter() - started
        live.audio_bytes += len(audio)
        telemetry.CHUNK_LATENCY.observe(elapsed)
        telemetry.AUDIO_SECONDS.inc(len(audio) / live.session.bytes_per_second)
        events = self.publish(live, events)
        if at_limit:
            events += await self.finish(live, "max_duration")
        return events

    def check_pace(self, live: LiveSession, size: int) -> None:
        """Refuse audio that runs ahead of max_realtime_factor x real time by more than the burst."""
        factor, burst = self.limits.max_realtime_factor, self.limits.realtime_burst_s
        if not factor:
            return
        seconds = (live.audio_bytes + size) / live.session.bytes_per_second
        if seconds > burst + factor * (time.monotonic() - live.opened):
            raise ServiceError("too_fast", f"audio is arriving faster than {factor:g}x real time (beyond a "
                                           f"{burst:g} s burst); this chunk was dropped: send audio at its pace")

    def within_duration(self, live: LiveSession, audio: bytes) -> tuple[bytes, bool]:
        """The part of the chunk within max_session_audio_s, and whether the limit is reached."""
        if not self.limits.max_session_audio_s:
            return audio, False
        bytes_per_second = live.session.bytes_per_second
        sample_bytes = bytes_per_second // live.session.options.sample_rate
        limit = int(self.limits.max_session_audio_s * live.session.options.sample_rate) * sample_bytes
        room = limit - live.audio_bytes
        return (audio[:room], True) if len(audio) >= room else (audio, False)

    async def finish(self, live: LiveSession, reason: str = "eof") -> list[dict]:
        """Last final, then `end` with why it ended (eof, disconnect, shutdown); subscribers are
        told and the session is forgotten."""
        try:
            end = {"type": "end", "session_id": live.id, "reason": reason}
            last = await self.batcher.submit(live.session, None) if not live.session.closed else []
            events = last + [end]
            return self.publish(live, events)
        finally:
            self.close(live)

    def close(self, live: LiveSession) -> None:
        if self.sessions.pop(live.id, None) is not None:
            live.hub.close()
            telemetry.SESSIONS_ACTIVE.set(len(self.sessions))

    def publish(self, live: LiveSession, events: list[dict]) -> list[dict]:
        telemetry.FINALS.inc(sum(e["type"] == "final" for e in events))
        for _ in live.hub.publish(events):
            telemetry.ERRORS.labels("too_slow").inc()
        return events

    def subscribe(self, session_id: str, read_token: str | None) -> tuple[LiveSession, Subscription]:
        """A subscription to a live session; an unknown id and a wrong token get the same refusal."""
        live = self.sessions.get(session_id)
        if live is None or not same_secret(read_token, live.read_token):
            raise ServiceError("unknown_session", f"no live session {session_id!r} with that read token")
        return live, live.hub.subscribe(self.limits.subscriber_queue, self.limits.subscriber_max_finals)

    async def suggest(self, text: str, count: int | None) -> list[dict]:
        return await self.guarded(self.recognizer.suggest, text, count)

    async def score(self, text: str) -> dict:
        return await self.guarded(self.recognizer.score, text)

    async def recognize(self, options: SessionOptions, audio: bytes) -> list[dict]:
        live = self.open(options, "unary")
        try:
            events = await self.feed(live, audio)
            return events + (await self.finish(live) if live.id in self.sessions else [])
        finally:
            self.close(live)  # also when the audio was bad

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
