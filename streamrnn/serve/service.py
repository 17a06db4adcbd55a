"""The engine as a service: named live sessions, engine work off the event
loop, events fanned out to subscribers, sessions kept for a while when their
client's connection drops so that the client can resume them. Both transports
sit on this."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from streamrnn.audio import AudioError
from streamrnn.config import LimitsConfig, ResumeConfig
from streamrnn.engine.backend import Engine, SessionHandle
from streamrnn.engine.batcher import EngineError
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.serve import telemetry
from streamrnn.serve.auth import new_secret, same_secret
from streamrnn.serve.cluster import ClusterStore, SessionMoved
from streamrnn.serve.hub import Hub, Subscription
from streamrnn_client.protocol import ErrorCode, StreamrnnError

log = logging.getLogger("streamrnn.serve.service")
MAX_REPLAY = 256  # finals kept per session for clients that resume
MAX_FORGOTTEN = 10000  # ids of sessions whose resume window passed, for a precise error
RESUMABLE = ("websocket", "grpc")  # the transports whose clients can resume (with [cluster]: on any replica)


class ServiceError(StreamrnnError):
    """An error for the client: a machine-readable code and a message naming the problem."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def event(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass
class LiveSession:
    id: str
    session: SessionHandle
    hub: Hub = field(default_factory=Hub)
    read_token: str = field(default_factory=new_secret)  # what a subscriber must show
    resume_token: str = field(default_factory=new_secret)  # what a returning client must show
    audio_bytes: int = 0  # audio decoded, for the duration and pace limits
    opened: float = field(default_factory=time.monotonic)
    # The attached client's events, in order, None at the end; None while no client is attached.
    outbox: asyncio.Queue | None = None
    received: int = 0  # audio bytes taken from the client: where a resumed client carries on
    acked: int = 0  # `received` when the client was last told it
    seq: int = 0  # sequence number of the last published event
    replay: deque = field(default_factory=lambda: deque(maxlen=MAX_REPLAY))  # finals and end, with seq
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one engine call at a time, in order
    expiry: asyncio.TimerHandle | None = None
    ended: bool = False
    handed_over: bool = False  # let go at a shutdown, for its client to resume on another replica
    shared: bool = False  # its journal in the [cluster] Redis is whole: another replica can resume it
    opened_at: float = field(default_factory=time.time)  # wall clock, the same on every replica

    def started_event(self) -> dict:
        return {"type": "session", "session_id": self.id, "read_token": self.read_token,
                "resume_token": self.resume_token}


class RecognitionService:
    def __init__(self, recognizer: Recognizer, engine: Engine, max_sessions: int = 256,
                 limits: LimitsConfig | None = None, resume: ResumeConfig | None = None,
                 cluster: ClusterStore | None = None):
        """Session audio goes through `engine`; LM-only requests (suggest, score) through
        `recognizer`, on a thread of this service. Either way the event loop stays free. With
        `cluster`, sessions are shared through Redis so that other replicas can resume them."""
        self.recognizer = recognizer
        self.engine = engine
        self.max_sessions = max_sessions
        self.limits = limits or LimitsConfig()
        self.resume_config = resume or ResumeConfig()
        self.sessions: dict[str, LiveSession] = {}  # open, with or without a client attached
        self.ended: dict[str, LiveSession] = {}  # ended at eof, kept for the resume window
        self.forgotten: OrderedDict[str, tuple[str, str]] = OrderedDict()  # old id -> error code, message
        self.draining = False
        self.cluster = cluster
        self.restoring: dict[str, asyncio.Task] = {}  # sessions being taken over from another replica
        self.background: set[asyncio.Task] = set()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="engine")

    async def run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def open(self, options: SessionOptions, transport: str, session_id: str | None = None) -> LiveSession:
        if self.draining:
            raise ServiceError(ErrorCode.SHUTTING_DOWN, "the server is shutting down and takes no new sessions")
        if len(self.sessions) >= self.max_sessions:
            raise ServiceError(ErrorCode.BUSY, f"the server is at its limit of {self.max_sessions} sessions")
        try:
            session = self.engine.open(options)
        except EngineError as err:
            raise ServiceError(ErrorCode.ENGINE_FAILED, str(err)) from err
        except (AudioError, ValueError) as err:
            raise ServiceError(ErrorCode.BAD_CONFIG, str(err)) from err
        live = LiveSession(session_id or uuid.uuid4().hex, session)
        self.sessions[live.id] = live
        telemetry.SESSIONS_ACTIVE.set(len(self.sessions))
        telemetry.SESSIONS_TOTAL.labels(transport).inc()
        return live

    async def start(self, options: SessionOptions, transport: str) -> tuple[LiveSession, asyncio.Queue]:
        """A new session with its client attached; the client's first event names it (once
        Redis has it, with [cluster])."""
        live = self.open(options, transport)
        if self.cluster is not None and transport in RESUMABLE:
            meta = {"options": dataclasses.asdict(options), "transport": transport, "opened_at": live.opened_at,
                    "read_token": live.read_token, "resume_token": live.resume_token}
            live.shared = await self.cluster.append(live.id, b"", meta)
        outbox = self.attach(live)
        outbox.put_nowait(live.started_event())
        return live, outbox

    def attach(self, live: LiveSession) -> asyncio.Queue:
        """The session's events now go to a new client; a client attached before is let go."""
        if live.outbox is not None:
            live.outbox.put_nowait(None)
        if live.expiry is not None:
            live.expiry.cancel()
            live.expiry = None
        live.outbox = asyncio.Queue()
        return live.outbox

    async def detach(self, live: LiveSession, outbox: asyncio.Queue, dropped: bool = True) -> None:
        """The client behind `outbox` went away without eof. When its connection `dropped` (rather
        than being closed on purpose), keep the session for the resume window; else finish it."""
        if live.outbox is not outbox:  # ended, or resumed on another connection
            return
        outbox.put_nowait(None)
        live.outbox = None
        window = self.resume_config.window_s
        if window <= 0 or not dropped:
            await self.finish_quietly(live, "disconnect")
            return
        live.expiry = asyncio.get_running_loop().call_later(
            window, lambda: asyncio.ensure_future(self.expire(live)))

    async def expire(self, live: LiveSession) -> None:
        if live.outbox is None and not live.ended:
            log.info("session %s: resume window passed", live.id)
            await self.finish_quietly(live, "disconnect")

    async def resume(self, session_id: str, token: str, last_seq: int) -> tuple[LiveSession, asyncio.Queue]:
        """Attach a returning client: it learns how much audio was taken (`ack`) and gets the
        finals (and `end`) published after the last event it has (`last_seq`)."""
        live, end_reason = await self.find_resumable(session_id, token)
        async with live.lock:  # audio being fed now is counted before the client learns `ack`
            outbox = self.attach(live)
            outbox.put_nowait({"type": "resumed", "session_id": live.id, "ack": live.received,
                               "last_seq": live.seq})
            for event in live.replay:
                if event["seq"] > last_seq:
                    outbox.put_nowait(event)
            if live.ended:
                live.outbox = None
                outbox.put_nowait(None)
        telemetry.RESUMES.inc()
        log.info("session %s resumed at %d bytes, replaying after event %d", live.id, live.received, last_seq)
        if end_reason is not None:  # it had ended on the replica that died: its last final and `end` again
            await self.finish(live, end_reason, outbox)
        return live, outbox

    async def find_resumable(self, session_id: str, token: str) -> tuple[LiveSession, str | None]:
        """The session, here or (with [cluster]) taken over from another replica; and, for one
        taken over that had ended there, why it ended."""
        if self.draining:
            raise ServiceError(ErrorCode.SHUTTING_DOWN, "the server is shutting down and resumes no sessions")
        live = self.sessions.get(session_id) or self.ended.get(session_id)
        end_reason = None
        if live is not None and live.shared and await self.moved_away(live):
            live = None
        if live is None and self.cluster is not None and session_id not in self.forgotten:
            live, end_reason = await self.take_over(session_id, token)
        if live is None:
            if session_id in self.forgotten:
                raise ServiceError(*self.forgotten[session_id])
            raise ServiceError(ErrorCode.UNKNOWN_SESSION, f"no live session with id {session_id!r}")
        if not same_secret(token, live.resume_token):
            raise ServiceError(ErrorCode.BAD_RESUME_TOKEN, f"wrong resume token for session {session_id}")
        return live, end_reason

    async def moved_away(self, live: LiveSession) -> bool:
        """Whether another replica took the session over (its client resumed there); if so, it is
        let go here."""
        owner = await self.cluster.owner(live.id)
        if owner is None or owner == self.cluster.replica:
            return False
        self.let_go(live)
        return True

    def let_go(self, live: LiveSession) -> None:
        """Forget a session that another replica has taken over, as if it had never been here: a
        later resume here takes it over from Redis in turn."""
        log.info("session %s: taken over by another replica; let go here", live.id)
        live.shared = False
        self.close(live, "moved")
        self.ended.pop(live.id, None)
        self.forgotten.pop(live.id, None)

    async def take_over(self, session_id: str, token: str) -> tuple[LiveSession | None, str | None]:
        """A session from Redis, restored here; concurrent resumes of it share one restore."""
        task = self.restoring.get(session_id)
        if task is None:
            task = asyncio.ensure_future(self.restore(session_id, token))
            self.restoring[session_id] = task
            task.add_done_callback(lambda _: self.restoring.pop(session_id, None))
        return await asyncio.shield(task)

    async def restore(self, session_id: str, token: str) -> tuple[LiveSession | None, str | None]:
        """Replay the session's journal into a fresh engine session: the same states, events and
        sequence numbers as on the replica it comes from. (None, None): Redis has no such session."""
        record = await self.cluster.load(session_id)
        if record is None:
            return None, None
        if record.gone:
            raise ServiceError(*record.gone)
        meta = record.meta
        if not same_secret(token, meta["resume_token"]):
            raise ServiceError(ErrorCode.BAD_RESUME_TOKEN, f"wrong resume token for session {session_id}")
        live = self.open(SessionOptions(**meta["options"]), meta["transport"], session_id)
        journal = await self.cluster.claim(session_id)
        if journal is None:  # gone meanwhile
            self.sessions.pop(live.id)
            telemetry.SESSIONS_ACTIVE.set(len(self.sessions))
            return None, None
        live.read_token, live.resume_token, live.shared = meta["read_token"], meta["resume_token"], True
        live.opened -= max(0.0, time.time() - meta["opened_at"])  # the pace limit counts from the real start
        try:
            end_reason = await self.replay_journal(live, journal)
        except ServiceError:
            live.shared = False
            self.close(live, "engine_failed")
            raise
        telemetry.CLUSTER_RESTORES.inc()
        log.info("session %s taken over from redis: %d chunks, %d bytes replayed", live.id, len(journal), live.received)
        return live, end_reason

    async def replay_journal(self, live: LiveSession, journal: list[bytes]) -> str | None:
        """Feed the journal's chunks as they were fed; the reason it ended, if it did."""
        async with live.lock:
            for entry in journal:
                kind, data = entry[:1], entry[1:]
                if kind == b"e":
                    return data.decode()
                if kind == b"a":
                    self.number(live, await self.run_chunk(live, data))
                    live.audio_bytes += len(data)
                live.received += len(data) if kind == b"a" else int(data or 0)
        return None

    def check_attached(self, live: LiveSession, outbox: asyncio.Queue | None) -> None:
        if outbox is not None and live.outbox is not outbox:
            raise ServiceError(ErrorCode.SESSION_MOVED, f"session {live.id} ended or was resumed on another connection")

    async def feed(self, live: LiveSession, audio: bytes, outbox: asyncio.Queue | None = None) -> list[dict]:
        """Audio from the client attached through `outbox` (None: no resumable client). The
        chunk's events; at the session's audio limit, its last final and `end` too."""
        async with live.lock:
            self.check_attached(live, outbox)
            try:
                self.check_pace(live, len(audio))
                audio, at_limit = self.within_duration(live, audio)
                # Shielded: once the engine has the chunk, its events are published even if the
                # transport gives up waiting (a cancelled gRPC call), so a resume finds them.
                events = await asyncio.shield(self.decode(live, audio))
            except ServiceError:
                await self.journal(live, b"s%d" % len(audio))  # dropped, but counted as taken
                raise
            finally:
                live.received += len(audio)
            self.acknowledge(live)
        if at_limit:
            events += await self.finish(live, "max_duration")
        return events

    async def decode(self, live: LiveSession, audio: bytes) -> list[dict]:
        started = time.perf_counter()
        events = await self.run_chunk(live, audio)
        elapsed = time.perf_counter() - started
        live.audio_bytes += len(audio)
        telemetry.CHUNK_LATENCY.observe(elapsed)
        telemetry.AUDIO_SECONDS.inc(len(audio) / live.session.bytes_per_second)
        await self.journal(live, b"a" + audio)  # before anyone sees its events: a resume elsewhere finds them
        return self.publish(live, events)

    async def journal(self, live: LiveSession, entry: bytes) -> None:
        """Add to the session's journal in Redis while it is shared (see cluster.py)."""
        if not live.shared:
            return
        try:
            live.shared = await self.cluster.append(live.id, entry)
        except SessionMoved:
            self.let_go(live)
            raise ServiceError(ErrorCode.SESSION_MOVED, f"session {live.id} was resumed on another replica") from None

    async def run_chunk(self, live: LiveSession, audio: bytes | None) -> list[dict]:
        """The engine's events for a chunk of the session's audio (None: its end)."""
        try:
            return await self.engine.submit(live.session, audio)
        except EngineError as err:
            raise ServiceError(ErrorCode.ENGINE_FAILED, str(err)) from err
        except AudioError as err:
            raise ServiceError(ErrorCode.BAD_AUDIO, str(err)) from err
        except ValueError as err:
            raise ServiceError(ErrorCode.SESSION_CLOSED, str(err)) from err

    def close_engine(self) -> None:
        self.engine.close()

    def check_pace(self, live: LiveSession, size: int) -> None:
        """Refuse audio that runs ahead of max_realtime_factor x real time by more than the burst."""
        factor, burst = self.limits.max_realtime_factor, self.limits.realtime_burst_s
        if not factor:
            return
        seconds = (live.audio_bytes + size) / live.session.bytes_per_second
        if seconds > burst + factor * (time.monotonic() - live.opened):
            raise ServiceError(ErrorCode.TOO_FAST, f"audio is arriving faster than {factor:g}x real time (beyond a "
                                           f"{burst:g} s burst); this chunk was dropped: send audio at its pace")

    def within_duration(self, live: LiveSession, audio: bytes) -> tuple[bytes, bool]:
        """The part of the chunk within max_session_audio_s, and whether the limit is reached."""
        if not self.limits.max_session_audio_s:
            return audio, False
        room = self.audio_limit_bytes(live) - live.audio_bytes
        return (audio[:room], True) if len(audio) >= room else (audio, False)

    def audio_limit_bytes(self, live: LiveSession) -> int:
        """max_session_audio_s in whole samples of the session's encoding."""
        rate = live.session.options.sample_rate
        return int(self.limits.max_session_audio_s * rate) * (live.session.bytes_per_second // rate)

    @property
    def idle_timeout(self) -> float | None:
        """Seconds a client may stay silent (for asyncio.wait_for); None: no limit."""
        return self.limits.idle_timeout_s or None

    def acknowledge(self, live: LiveSession) -> None:
        """Tell the client how much audio it need not keep, every `ack_interval_s` of audio."""
        interval = self.resume_config.ack_interval_s * live.session.bytes_per_second
        if live.outbox is not None and live.received - live.acked >= interval:
            live.acked = live.received
            live.outbox.put_nowait({"type": "ack", "bytes": live.received})

    async def finish(self, live: LiveSession, reason: str = "eof", outbox: asyncio.Queue | None = None) -> list[dict]:
        """Last final, then `end` with why it ended (eof, disconnect, shutdown); subscribers and
        the attached client are told and the session is closed."""
        async with live.lock:
            self.check_attached(live, outbox)
            if live.ended:
                return []
            try:
                end = {"type": "end", "session_id": live.id, "reason": reason}
                last = await self.run_chunk(live, None) if not live.session.closed else []
                await self.journal(live, b"e" + reason.encode())
                return self.publish(live, last + [end])
            finally:
                self.close(live, reason)

    def close(self, live: LiveSession, reason: str) -> None:
        """Forget an ended session. One that ended at its client's eof is kept for the resume
        window, so that a client whose connection dropped right after eof still gets its last final."""
        keep = reason == "eof" and live.outbox is not None and self.resume_config.window_s > 0
        live.ended = True
        if live.expiry is not None:
            live.expiry.cancel()
        if live.outbox is not None:
            live.outbox.put_nowait(None)
            live.outbox = None
        if self.sessions.pop(live.id, None) is None:
            return
        live.hub.close()
        telemetry.SESSIONS_ACTIVE.set(len(self.sessions))
        window = self.resume_config.window_s
        if keep:
            self.ended[live.id] = live
            why = f"it ended (eof) and its resume window of {window:g} s has passed"
            asyncio.get_running_loop().call_later(window, self.forget, live.id, "resume_expired", why)
        elif reason == "disconnect" and window > 0:
            self.forget(live.id, "resume_expired",
                        f"its client did not come back within the resume window of {window:g} s")
        else:
            self.forget(live.id, "session_ended", f"it ended ({reason})")

    def forget(self, session_id: str, code: str, why: str) -> None:
        self.ended.pop(session_id, None)
        self.forgotten[session_id] = code, f"session {session_id} cannot be resumed: {why}"
        while len(self.forgotten) > MAX_FORGOTTEN:
            self.forgotten.popitem(last=False)
        if self.cluster is not None:
            self.in_background(self.cluster.forget(session_id, *self.forgotten[session_id]))

    def in_background(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def publish(self, live: LiveSession, events: list[dict]) -> list[dict]:
        """Number the events, keep finals for resumes, send them to the client and subscribers."""
        numbered = self.number(live, events)
        telemetry.FINALS.inc(sum(e["type"] == "final" for e in numbered))
        for _ in live.hub.publish(numbered):
            telemetry.ERRORS.labels("too_slow").inc()
        if live.outbox is not None:
            for event in numbered:
                live.outbox.put_nowait(event)
        return numbered

    @staticmethod
    def number(live: LiveSession, events: list[dict]) -> list[dict]:
        """The events with their sequence numbers; finals and `end` kept for resumes."""
        numbered = []
        for event in events:
            live.seq += 1
            numbered.append({**event, "seq": live.seq})
        live.replay.extend(e for e in numbered if e["type"] in ("final", "end"))
        return numbered

    def subscribe(self, session_id: str, read_token: str | None) -> tuple[LiveSession, Subscription]:
        """A subscription to a live session; an unknown id and a wrong token get the same refusal."""
        live = self.sessions.get(session_id)
        if live is None or not same_secret(read_token, live.read_token):
            raise ServiceError(ErrorCode.UNKNOWN_SESSION, f"no live session {session_id!r} with that read token")
        return live, live.hub.subscribe(self.limits.subscriber_queue, self.limits.subscriber_max_finals)

    async def suggest(self, text: str, count: int | None) -> list[dict]:
        return await self.guarded(self.recognizer.suggest, text, count)

    async def score(self, text: str) -> dict:
        return await self.guarded(self.recognizer.score, text)

    async def recognize(self, options: SessionOptions, audio: bytes, transport: str = "unary") -> list[dict]:
        """A whole recording at once: all of it within max_session_audio_s or an error, and
        not held to the real-time pace."""
        async with contextlib.aclosing(self.transcribe(options, audio, transport)) as events:
            return [event async for event in events]

    async def transcribe(self, options: SessionOptions, audio: bytes, transport: str,
                         piece_s: float | None = None) -> AsyncIterator[dict]:
        """A whole recording as `recognize` takes it, fed in pieces of `piece_s` seconds (None: in
        one), so that its events come as it goes and the engine serves live sessions in between.
        A caller that stops early ends the session (reason disconnect)."""
        live = self.open(options, transport)
        try:
            limit = self.limits.max_session_audio_s
            if limit and len(audio) > self.audio_limit_bytes(live):
                raise ServiceError(ErrorCode.TOO_LONG, f"the audio is longer than the limit of {limit:g} s per session")
            for piece in self.pieces(live, audio, piece_s):
                if live.ended:  # finished by a drain
                    raise ServiceError(ErrorCode.SHUTTING_DOWN, "the server is shutting down")
                async with live.lock:
                    events = await asyncio.shield(self.decode(live, piece))
                for event in events:
                    yield event
            for event in await self.finish(live, "eof"):
                yield event
        except GeneratorExit:  # the caller stopped reading: its last final goes to subscribers
            await self.finish_quietly(live, "disconnect")
            raise
        finally:
            self.close(live, "eof")  # also when the audio was bad

    @staticmethod
    def pieces(live: LiveSession, audio: bytes, piece_s: float | None) -> list[bytes]:
        """The audio in pieces of whole samples, `piece_s` seconds each (at least one piece)."""
        if not piece_s:
            return [audio]
        rate = live.session.options.sample_rate
        step = max(1, int(piece_s * rate)) * (live.session.bytes_per_second // rate)
        return [audio[start:start + step] for start in range(0, len(audio), step)] or [audio]

    async def guarded(self, function, *args):
        try:
            return await self.run(function, *args)
        except ValueError as err:
            raise ServiceError(ErrorCode.BAD_REQUEST, str(err)) from err

    async def drain(self) -> None:
        """Take no new sessions; finish every open one (their finals and `end` with reason
        shutdown reach their clients and subscribers). With [cluster], while other replicas are
        alive, a session whose journal is whole is handed over instead: its client's connection
        is closed and the client resumes it on another replica (a rolling update or a scale-down
        loses nothing)."""
        self.draining = True
        others = await self.cluster.other_replicas() if self.cluster is not None else 0
        if self.cluster is not None:
            log.info("%d other replicas alive%s", others, ": open sessions are handed over to them" if others else "")
        for live in list(self.sessions.values()):
            if live.shared and others and self.cluster.up:
                await self.hand_over(live)
            else:
                await self.finish_quietly(live, "shutdown")

    async def hand_over(self, live: LiveSession) -> None:
        """Let the session go, its state left in Redis (after the chunk being decoded, if any)."""
        async with live.lock:
            if live.ended:
                return
            live.handed_over = live.ended = True
            if live.expiry is not None:
                live.expiry.cancel()
            if live.outbox is not None:
                live.outbox.put_nowait(None)
                live.outbox = None
            self.sessions.pop(live.id, None)
            live.hub.close()
            telemetry.SESSIONS_ACTIVE.set(len(self.sessions))
        log.info("session %s handed over: its client resumes it on another replica", live.id)

    async def finish_quietly(self, live: LiveSession, reason: str) -> None:
        """Finish a session nobody waits on: an engine failure is logged (the session still closes)."""
        try:
            await self.finish(live, reason)
        except ServiceError as err:
            log.error("session %s could not finish (%s): %s", live.id, reason, err.message)
