"""OpenAI's audio transcription API on the HTTP port, for the clients that already speak it (the
`openai` libraries, scripts with curl): POST /v1/audio/transcriptions and GET /v1/models.

An upload is decoded with the client library's audio reader and fed through one ordinary session
of the service (RecognitionService.transcribe), so its text is the final text that the same audio
gets over WebSocket; errors are OpenAI's JSON, {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import numpy as np
import soundfile
from python_multipart import FormParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from streamrnn.serve import telemetry
from streamrnn.serve.auth import KeyCheck, bearer
from streamrnn.serve.plain_http import BodyTooLarge, HttpExchange
from streamrnn.serve.service import RecognitionService, ServiceError
from streamrnn_client.audio import decode_audio, streamable
from streamrnn_client.protocol import AudioError, ErrorCode, SessionOptions

log = logging.getLogger("streamrnn.openai")
TRANSCRIPTIONS, MODELS = "/v1/audio/transcriptions", "/v1/models"
MODEL = "streamrnn"  # what GET /v1/models lists; any `model` name is taken (the daemon has one)
JSON = "application/json"
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
GRANULARITIES = ("segment", "word")
LANGUAGES = ("en", "english")
# Form fields of OpenAI's API that are taken; temperature, include[] and chunking_strategy do
# not apply to this recognizer and are ignored. Any other field is refused.
FIELDS = {"file", "model", "language", "prompt", "response_format", "temperature", "stream",
          "timestamp_granularities[]", "include[]", "chunking_strategy"}
PIECE_S = 1.0  # an upload reaches the engine in pieces this long, between live sessions' chunks
STATUS = {ErrorCode.BUSY: 429, ErrorCode.TOO_FAST: 429, ErrorCode.TOO_LONG: 413, ErrorCode.TOO_LARGE: 413,
          ErrorCode.SHUTTING_DOWN: 503, ErrorCode.ENGINE_FAILED: 500, ErrorCode.UNAUTHENTICATED: 401,
          ErrorCode.NOT_FOUND: 404, ErrorCode.METHOD_NOT_ALLOWED: 405}


class ApiError(Exception):
    """An error answered in OpenAI's shape, with the HTTP status of its streamrnn error code."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)

    def body(self) -> dict:
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(self.status, "invalid_request_error")
        if self.status >= 500:
            kind = "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Upload:
    """A transcription request's form."""
    fields: dict[str, list[str]] = field(default_factory=dict)
    file_name: str = ""
    audio: bytes | None = None  # the `file` field's bytes; None: no such field

    def one(self, name: str, default: str | None = None) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else default


class OpenAIApi:
    def __init__(self, service: RecognitionService, keys: KeyCheck, max_upload_bytes: int):
        self.service = service
        self.keys = keys
        self.max_upload_bytes = max_upload_bytes
        self.tasks: set[asyncio.Task] = set()  # requests being served, for the drain to wait on

    @staticmethod
    def serves(path: str) -> bool:
        return path.startswith("/v1/audio/") or path == MODELS

    async def handle(self, exchange: HttpExchange) -> None:
        try:
            request = await exchange.next_event()
            if isinstance(request, h11.Request):
                await self.route(exchange, request)
        except ApiError as err:
            respond_error(exchange, err)
        except h11.RemoteProtocolError as err:
            respond_error(exchange, ApiError(ErrorCode.BAD_REQUEST, f"not a valid HTTP request: {err}"))
        except ConnectionError:
            pass  # the client went away

    async def route(self, exchange: HttpExchange, request: h11.Request) -> None:
        path = urlsplit(request.target.decode("latin-1")).path
        headers = {name.decode().lower(): value.decode("latin-1") for name, value in request.headers}
        key = bearer(headers.get("authorization")) or headers.get("x-api-key")
        if not self.keys.valid(key):
            raise ApiError(ErrorCode.UNAUTHENTICATED, "this server needs an API key: send the header "
                                                      "Authorization: Bearer KEY")
        method = request.method.decode()
        if path == MODELS:
            require_method(method, "GET")
            exchange.respond(200, json.dumps(models()).encode(), JSON)
        elif path == TRANSCRIPTIONS:
            require_method(method, "POST")
            await self.transcribe(exchange, await self.read_form(exchange, headers))
        else:
            raise ApiError(ErrorCode.NOT_FOUND, f"no such path: {path} (this server has {TRANSCRIPTIONS} "
                                                   f"and {MODELS})")

    async def read_form(self, exchange: HttpExchange, headers: dict[str, str]) -> Upload:
        content_type, params = parse_options_header(headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or b"boundary" not in params:
            raise ApiError(ErrorCode.BAD_REQUEST, "send the request as multipart/form-data, the audio in its "
                                                  "file field (curl -F file=@speech.wav)")
        too_large = ApiError(ErrorCode.TOO_LARGE, f"the upload is larger than the limit of "
                                                  f"{self.max_upload_bytes} bytes", "file")
        length = headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.max_upload_bytes:
            raise too_large
        upload = Upload()
        parser = FormParser("multipart/form-data", lambda f: add_field(upload, f), lambda f: add_file(upload, f),
                            boundary=params[b"boundary"], config={"MAX_MEMORY_FILE_SIZE": self.max_upload_bytes + 1})
        try:
            async for data in exchange.body(self.max_upload_bytes):
                parser.write(data)
            parser.finalize()
        except BodyTooLarge:
            raise too_large from None
        except FormParserError as err:
            raise ApiError(ErrorCode.BAD_REQUEST, f"the multipart/form-data body cannot be read: {err}") from err
        return upload

    async def transcribe(self, exchange: HttpExchange, upload: Upload) -> None:
        request = TranscriptionRequest.from_upload(upload)
        started = time.monotonic()
        samples, rate = await asyncio.to_thread(self.decode, upload)
        options = SessionOptions(sample_rate=rate, encoding="f32le", interim_results=request.stream,
                                 suggestions=0, phrases=request.phrases)
        audio = samples.astype("<f4").tobytes()
        async with contextlib.aclosing(self.service.transcribe(options, audio, "openai", PIECE_S)) as events:
            try:  # the session's errors (busy, too long, shutting down) as HTTP statuses
                first = await anext(events, None)
                if request.stream:  # the errors after this one are events of the stream
                    await stream_events(exchange, first, events)
                    return
                finals = [e for e in [first] + [e async for e in events] if e and e["type"] == "final"]
            except ServiceError as err:
                raise ApiError(err.code, err.message) from err
        body, content_type = formatted(request, finals, len(samples) / rate)
        exchange.respond(200, body, content_type)
        log.info("transcribed %s: %.1f s of audio in %.2f s", upload.file_name or "an upload", len(samples) / rate,
                 time.monotonic() - started)

    def decode(self, upload: Upload) -> tuple[np.ndarray, int]:
        """The upload's samples at a rate the daemon takes; its length checked before it is decoded."""
        name = upload.file_name or "file"
        limit = self.service.limits.max_session_audio_s
        try:
            info = soundfile.info(io.BytesIO(upload.audio))
            if limit and info.frames > limit * info.samplerate:
                raise ApiError(ErrorCode.TOO_LONG, f"the audio of {name} is longer than the limit of {limit:g} s",
                               "file")
        except (soundfile.LibsndfileError, RuntimeError):
            pass  # decode_audio names the problem
        try:
            return streamable(*decode_audio(io.BytesIO(upload.audio), name), name)
        except AudioError as err:
            raise ApiError(ErrorCode.BAD_AUDIO, str(err), "file") from err


@dataclass
class TranscriptionRequest:
    response_format: str
    stream: bool
    words: bool  # timestamp_granularities[] has word
    segments: bool
    phrases: list[str]

    @classmethod
    def from_upload(cls, upload: Upload) -> TranscriptionRequest:
        unknown = set(upload.fields) - FIELDS
        if unknown:
            raise ApiError(ErrorCode.BAD_REQUEST, f"unknown fields: {', '.join(sorted(unknown))}", min(unknown))
        if upload.audio is None:
            raise ApiError(ErrorCode.BAD_REQUEST, "the request has no file field: send the audio as a file "
                                                  "(curl -F file=@speech.wav)", "file")
        response_format = upload.one("response_format", "json")
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(ErrorCode.BAD_REQUEST, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                                                  f"got {response_format!r}", "response_format")
        stream = upload.one("stream", "false").lower()
        if stream not in ("true", "false"):
            raise ApiError(ErrorCode.BAD_REQUEST, f"stream must be true or false, got {stream!r}", "stream")
        granularities = upload.fields.get("timestamp_granularities[]", [])
        if not set(granularities) <= set(GRANULARITIES):
            raise ApiError(ErrorCode.BAD_REQUEST, f"timestamp_granularities[] must be among {', '.join(GRANULARITIES)}"
                                                  f", got {', '.join(granularities)}", "timestamp_granularities[]")
        language = upload.one("language")
        if language and language.lower() not in LANGUAGES:
            raise ApiError(ErrorCode.BAD_REQUEST, f"this server transcribes English (en) only, not {language!r}",
                           "language")
        return cls(response_format, stream == "true", "word" in granularities,
                   "segment" in granularities or not granularities, prompt_phrases(upload.one("prompt", "")))


def prompt_phrases(prompt: str) -> list[str]:
    """The prompt as the session's phrases: one per comma or line."""
    return [phrase.strip() for line in prompt.splitlines() for phrase in line.split(",") if phrase.strip()]


def add_field(upload: Upload, part) -> None:
    value = (part.value or b"").decode("utf-8", "replace")
    upload.fields.setdefault(part.field_name.decode("utf-8", "replace"), []).append(value)


def add_file(upload: Upload, part) -> None:
    name = part.field_name.decode("utf-8", "replace")
    if name != "file":  # a file in another field: a form value like any other
        upload.fields.setdefault(name, []).append(part.file_object.getvalue().decode("utf-8", "replace"))
        return
    upload.file_name = (part.file_name or b"").decode("utf-8", "replace")
    upload.audio = part.file_object.getvalue()
    upload.fields.setdefault("file", [])


def require_method(method: str, allowed: str) -> None:
    if method != allowed:
        raise ApiError(ErrorCode.METHOD_NOT_ALLOWED, f"this path takes {allowed}, not {method}")


def respond_error(exchange: HttpExchange, error: ApiError) -> None:
    telemetry.ERRORS.labels(error.code).inc()
    extra = [("WWW-Authenticate", 'Bearer realm="streamrnn"')] if error.status == 401 else []
    with contextlib.suppress(h11.LocalProtocolError):  # an answer already started: the connection just closes
        exchange.respond(error.status, json.dumps(error.body()).encode(), JSON, *extra)


def models() -> dict:
    return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "streamrnn"}]}


async def stream_events(exchange: HttpExchange, first: dict | None, events: AsyncIterator[dict]) -> None:
    """Server-sent events: `transcript.text.partial` (streamrnn's own: the live guess, which may
    change), `transcript.text.delta` for each final (the deltas add up to the text) and
    `transcript.text.done`; an error after the start is an event of OpenAI's error shape."""
    exchange.start(200, "text/event-stream")
    texts = []
    try:
        async for event in prepend(first, events):
            if exchange.closed:
                return  # closing `events` ends the session
            if event["type"] == "partial":
                send_event(exchange, {"type": "transcript.text.partial", "text": event["text"]})
            elif event["type"] == "final" and event["text"]:
                send_event(exchange, {"type": "transcript.text.delta", "delta": " " * bool(texts) + event["text"]})
                texts.append(event["text"])
        send_event(exchange, {"type": "transcript.text.done", "text": " ".join(texts)})
    except ServiceError as err:
        telemetry.ERRORS.labels(err.code).inc()
        send_event(exchange, ApiError(err.code, err.message).body())
    exchange.send(h11.EndOfMessage())


async def prepend(first: dict | None, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
    if first is not None:
        yield first
    async for event in events:
        yield event


def send_event(exchange: HttpExchange, data: dict) -> None:
    exchange.send(h11.Data(data=f"data: {json.dumps(data)}\n\n".encode()))


def formatted(request: TranscriptionRequest, finals: list[dict], duration: float) -> tuple[bytes, str]:
    """The finals in the requested response_format: the body and its content type."""
    text = " ".join(e["text"] for e in finals if e["text"])
    finals = [e for e in finals if e["text"]]
    kind = request.response_format
    if kind == "text":
        return (text + "\n").encode(), "text/plain; charset=utf-8"
    if kind == "srt":
        return "".join(f"{i}\n{timestamp(e['start'], ',')} --> {timestamp(e['end'], ',')}\n{e['text']}\n\n"
                       for i, e in enumerate(finals, 1)).encode(), "text/plain; charset=utf-8"
    if kind == "vtt":
        return ("WEBVTT\n\n" + "".join(f"{timestamp(e['start'], '.')} --> {timestamp(e['end'], '.')}\n{e['text']}\n\n"
                                       for e in finals)).encode(), "text/vtt; charset=utf-8"
    if kind == "json":
        return json.dumps({"text": text}).encode(), JSON
    verbose = {"task": "transcribe", "language": "english", "duration": round(duration, 3), "text": text}
    if request.segments:
        verbose["segments"] = [segment(i, e) for i, e in enumerate(finals)]
    if request.words:
        verbose["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for e in finals for w in e["words"]]
    return json.dumps(verbose).encode(), JSON


def segment(index: int, final: dict) -> dict:
    """A final as one of OpenAI's segments. tokens is empty (the model's outputs are letters, not
    Whisper's tokens); avg_logprob is the mean log of its words' confidences; compression_ratio is
    Whisper's (the text's length over its zlib-compressed length); no_speech_prob is 0, as a final
    only comes of speech; temperature is 0 (no sampling)."""
    confidences = [max(w["conf"], 1e-6) for w in final["words"]] or [1.0]
    encoded = final["text"].encode()
    return {"id": index, "seek": 0, "start": final["start"], "end": final["end"], "text": final["text"],
            "tokens": [], "temperature": 0.0, "avg_logprob": round(float(np.mean(np.log(confidences))), 4),
            "compression_ratio": round(len(encoded) / len(zlib.compress(encoded)), 4), "no_speech_prob": 0.0}


def timestamp(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}{decimal}{millis % 1000:03d}"
