"""What the two resuming clients share: the audio kept until the server acknowledges it, when to
try again, where to restart sending and which events are new.

The WebSocket client (websocket.ResumingStream, asyncio) and the gRPC client
(grpc_client.ResumingGrpcStream, blocking, with threads) each keep a ResumeState and only add
their transport and their way of waiting; the state itself takes no locks (the gRPC client holds
its own around it).
"""
from __future__ import annotations

import time
from collections import deque


class AudioBuffer:
    """Audio sent but not yet acknowledged by the server, by byte offset in the stream,
    to send again after a reconnection."""

    def __init__(self):
        self.chunks: deque[bytes] = deque()
        self.start = 0  # stream offset of chunks[0]
        self.end = 0  # stream offset after the last chunk

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.end += len(chunk)

    def acknowledge(self, offset: int) -> None:
        """The server has everything before `offset`: forget it."""
        while self.chunks and self.start + len(self.chunks[0]) <= offset:
            self.start += len(self.chunks.popleft())

    def read(self, offset: int) -> bytes:
        """The audio from `offset` to the end of the chunk holding it (b"" at the end)."""
        if offset < self.start:
            raise ValueError(f"audio from byte {offset} was already forgotten (kept from {self.start})")
        position = self.start
        for chunk in self.chunks:
            if offset < position + len(chunk):
                return chunk[offset - position:]
            position += len(chunk)
        return b""


class Backoff:
    """When to try reconnecting: after 0.1, 0.2, 0.4 ... 2 s, for at most `give_up_after` seconds of
    failing; `reset` once connected again, so that a later drop gets the full time."""

    def __init__(self, give_up_after: float):
        self.give_up_after = give_up_after
        self.reset()

    def reset(self) -> None:
        self.deadline, self.delay = None, 0.05

    def next_delay(self, err: Exception) -> float:
        """Seconds to wait before the next try; raises `err` when there is no time left."""
        now = time.monotonic()
        self.deadline = self.deadline or now + self.give_up_after
        self.delay = min(2 * self.delay, 2.0)
        if now + self.delay > self.deadline:
            raise err
        return self.delay


class ResumeState:
    """One session as a resuming client sees it, across its connections: the audio source read
    into a buffer, the session to resume (once the server has started one), the sequence number
    of the last event passed on, and the backoff between tries."""

    def __init__(self, reconnect_for: float):
        self.reconnect_for = reconnect_for  # seconds of failed reconnection before giving up; 0: never
        self.buffer = AudioBuffer()
        self.source_done = False
        self.session_id: str | None = None
        self.resume_token: str | None = None
        self.last_seq = 0
        self.resumes = 0
        self.backoff = Backoff(reconnect_for)

    @property
    def has_session(self) -> bool:
        return self.session_id is not None

    def resume_request(self) -> dict:
        """The fields of a resume request (WebSocket message or gRPC ResumeRequest)."""
        return {"session_id": self.session_id, "resume_token": self.resume_token, "last_seq": self.last_seq}

    def session_started(self, session_id: str, resume_token: str) -> int:
        """The server started the session: audio goes from the start (returns the offset, 0)."""
        self.backoff.reset()
        self.session_id, self.resume_token = session_id, resume_token
        return 0

    def resumed(self, ack: int) -> int:
        """The server resumed the session having `ack` bytes: audio goes from there (returned)."""
        self.backoff.reset()
        self.resumes += 1
        self.buffer.acknowledge(ack)
        return ack

    def is_new(self, seq: int | None) -> bool:
        """Whether an event with this sequence number is to be passed on (False: it was before the
        connection dropped); events without one (0 or None) always are."""
        if seq and seq <= self.last_seq:
            return False
        self.last_seq = seq or self.last_seq
        return True

    def pending(self, offset: int) -> bytes | None:
        """The audio to send next from `offset`: b"" while the source has given no more yet, None
        once everything has been sent (time for end of audio)."""
        chunk = self.buffer.read(offset)
        return chunk if chunk or not self.source_done else None

    def retry_delay(self, err: Exception, retryable: bool) -> float:
        """Seconds to wait before trying again after `err`; raises it when it is not `retryable`,
        resuming is off, or the time to try is up."""
        if not retryable or not self.reconnect_for:
            raise err
        return self.backoff.next_delay(err)
