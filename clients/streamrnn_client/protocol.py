"""The session protocol that the daemon and its clients share, over WebSocket and gRPC: session
options, event types, end reasons and error codes. Pure Python: no torch, no network."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
ENCODINGS = ("pcm_s16le", "f32le")
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "f32le": 4}
MAX_PHRASES = 1000
MAX_SUGGESTIONS = 20
# What a load balancer in front of replicas says, as a gRPC UNAVAILABLE status's message, while it
# has no replica for a call (deploy/nginx.conf does): the clients try again, also a new session.
NO_REPLICA = "no streamrnn replica is available now"


class StreamrnnError(Exception):
    """The base of every error that streamrnn reports to a person: its message names the problem."""


class OptionsError(StreamrnnError, ValueError):
    """Session options that cannot be used."""


class AudioError(StreamrnnError, ValueError):
    """Audio that cannot be used (a file, a sample rate, an encoding, PCM bytes)."""


class EventType(StrEnum):
    SESSION = "session"  # the session's id and tokens; the first event
    PARTIAL = "partial"
    FINAL = "final"
    SUGGESTIONS = "suggestions"
    ACK = "ack"  # audio bytes the server has taken
    RESUMED = "resumed"  # a dropped session carried on
    ERROR = "error"
    END = "end"  # the last event


class EndReason(StrEnum):
    EOF = "eof"
    DISCONNECT = "disconnect"
    SHUTDOWN = "shutdown"
    IDLE = "idle"
    MAX_DURATION = "max_duration"


class ErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"
    BAD_CONFIG = "bad_config"
    BAD_AUDIO = "bad_audio"
    BAD_REQUEST = "bad_request"
    CONFIG_REQUIRED = "config_required"
    BUSY = "busy"
    SHUTTING_DOWN = "shutting_down"
    UNKNOWN_SESSION = "unknown_session"
    BAD_RESUME_TOKEN = "bad_resume_token"
    RESUME_EXPIRED = "resume_expired"
    SESSION_ENDED = "session_ended"
    SESSION_CLOSED = "session_closed"
    SESSION_MOVED = "session_moved"
    TOO_FAST = "too_fast"
    TOO_SLOW = "too_slow"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"  # an upload past the size limit
    IDLE = "idle"
    ENGINE_FAILED = "engine_failed"
    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"  # an HTTP path
    METHOD_NOT_ALLOWED = "method_not_allowed"


def check_rate(rate: int) -> int:
    if rate not in SAMPLE_RATES:
        raise AudioError(f"unsupported sample rate {rate}; use one of {', '.join(map(str, SAMPLE_RATES))}")
    return rate


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise AudioError(f"unsupported encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    return encoding


@dataclass
class SessionOptions:
    """A session's options, with the defaults of every transport."""
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    interim_results: bool = True
    suggestions: int | None = None  # None: the server's default count
    phrases: list[str] = field(default_factory=list)

    def validate(self) -> "SessionOptions":
        check_rate(self.sample_rate)
        check_encoding(self.encoding)
        if self.suggestions is not None and not 0 <= self.suggestions <= MAX_SUGGESTIONS:
            raise OptionsError(f"suggestions must be between 0 and {MAX_SUGGESTIONS}, got {self.suggestions}")
        if not isinstance(self.phrases, list) or not all(isinstance(p, str) for p in self.phrases):
            raise OptionsError("phrases must be a list of strings")
        if len(self.phrases) > MAX_PHRASES:
            raise OptionsError(f"at most {MAX_PHRASES} phrases, got {len(self.phrases)}")
        return self

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * BYTES_PER_SAMPLE[self.encoding]

    def config_message(self) -> dict:
        """The WebSocket API's first message for these options."""
        message = {"type": "config", "sample_rate": self.sample_rate, "encoding": self.encoding,
                   "interim_results": self.interim_results}
        if self.suggestions is not None:
            message["suggestions"] = self.suggestions
        if self.phrases:
            message["phrases"] = list(self.phrases)
        return message
