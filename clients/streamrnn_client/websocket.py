"""Python client library for a streamrnn daemon, over WebSocket or gRPC.

    async for event in stream_audio("ws://127.0.0.1:8080", chunks, sample_rate=16000):
        print(event)

Every call takes `api_key` (when the daemon has keys configured) and, for wss:// URLs,
`ssl` (an ssl.SSLContext, e.g. from streamrnn.serve.tls.client_context(ca="cert.pem")).
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidMessage,
)

from streamrnn.audio import chunks, load_for_streaming


class ServerError(Exception):
    """An error event (WebSocket) or status (gRPC) from the server."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def config_message(sample_rate: int = 16000, encoding: str = "pcm_s16le", interim_results: bool = True,
                   suggestions: int | None = None, phrases: list[str] | None = None) -> dict:
    message = {"type": "config", "sample_rate": sample_rate, "encoding": encoding,
               "interim_results": interim_results}
    if suggestions is not None:
        message["suggestions"] = suggestions
    if phrases:
        message["phrases"] = list(phrases)
    return message


async def _aiter(chunks):
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def open_socket(url: str, path: str, api_key: str | None = None, ssl=None, headers: dict | None = None):
    """A WebSocket to `path` on the daemon at `url`, with the key as a bearer header."""
    headers = dict(headers or {})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return connect(url.rstrip("/") + path, additional_headers=headers, ssl=ssl, max_size=None, compression=None)


class AudioBuffer:
    """Audio sent but not yet acknowledged by the server, by byte offset in the stream,
    to send again after a reconnection."""

    def __init__(self):
        self.chunks: deque[bytes] = deque()
        self.start = 0  # stream offset of chunks[0]
        self.end = 0  # stream offset after the last chunk
        self.grown = asyncio.Event()

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.end += len(chunk)
        self.grown.set()

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


def unreachable(err: Exception) -> bool:
    """No daemon at the address (as opposed to a connection cut on the way)."""
    return isinstance(err, (ConnectionRefusedError, socket.gaierror))


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


class ResumingStream:
    """One recognition session over WebSocket that survives dropped connections: it reconnects,
    resumes the session (the server says how much audio it has), sends the rest again and
    passes on every event once (events carry a sequence number)."""

    def __init__(self, url: str, chunks, config: dict, reconnect_for: float = 30.0, api_key: str | None = None,
                 ssl=None):
        self.url, self.api_key, self.ssl = url, api_key, ssl
        self.source, self.config = chunks, config
        self.reconnect_for = reconnect_for  # seconds of failed reconnection before giving up
        self.buffer = AudioBuffer()
        self.source_done = False
        self.session_id = self.resume_token = None
        self.last_seq = 0
        self.resumes = 0
        self.backoff = Backoff(reconnect_for)

    async def events(self) -> AsyncIterator[dict]:
        reader = asyncio.create_task(self.read_source())
        try:
            while True:
                try:
                    async with aclosing(self.connection()) as events:  # the socket closes at `end`
                        async for event in events:
                            yield event
                            if event["type"] == "end":
                                return
                    if self.session_id is None:  # refused at the start: the error was passed on
                        return
                    lost = ConnectionError("the server closed the connection before the session ended")
                except (ConnectionClosed, InvalidMessage, OSError) as err:
                    lost = err
                if not self.reconnect_for or (self.session_id is None and unreachable(lost)):
                    raise lost
                await asyncio.sleep(self.backoff.next_delay(lost))
        finally:
            reader.cancel()

    async def read_source(self) -> None:
        """The audio source is read apart from any connection, so nothing is lost while away."""
        async for chunk in _aiter(self.source):
            self.buffer.add(chunk)
        self.source_done = True
        self.buffer.grown.set()

    async def connection(self) -> AsyncIterator[dict]:
        """One connection: start or resume, send audio, yield events not yielded before."""
        async with open_socket(self.url, "/v1/recognize", self.api_key, self.ssl) as ws:
            resuming = self.session_id is not None
            if resuming:
                await ws.send(json.dumps({"type": "resume", "session_id": self.session_id,
                                          "resume_token": self.resume_token, "last_seq": self.last_seq}))
            else:
                await ws.send(json.dumps(self.config))
            sender = None
            try:
                async for message in ws:
                    event = json.loads(message)
                    if event["type"] in ("session", "resumed"):
                        sender = asyncio.create_task(self.send_audio(ws, self.started(event)))
                    elif event["type"] == "ack":
                        self.buffer.acknowledge(event["bytes"])
                        continue
                    elif event["type"] == "error" and sender is None and resuming:
                        raise ServerError(event["code"], event["message"])
                    if event.get("seq", self.last_seq + 1) <= self.last_seq:
                        continue  # had it before the connection dropped
                    self.last_seq = event.get("seq", self.last_seq)
                    yield event
            finally:
                if sender is not None:
                    sender.cancel()

    def started(self, event: dict) -> int:
        """Where to start sending audio, from a `session` or `resumed` event."""
        self.backoff.reset()
        if event["type"] == "session":
            self.session_id, self.resume_token = event["session_id"], event["resume_token"]
            return 0
        self.resumes += 1
        self.buffer.acknowledge(event["ack"])
        return event["ack"]

    async def send_audio(self, ws, offset: int) -> None:
        while True:
            while chunk := self.buffer.read(offset):
                await ws.send(chunk)
                offset += len(chunk)
            if self.source_done:
                await ws.send(json.dumps({"type": "eof"}))
                return
            self.buffer.grown.clear()
            await self.buffer.grown.wait()


async def stream_audio(url: str, chunks: Iterable[bytes] | AsyncIterable[bytes], raise_errors: bool = True,
                       reconnect_for: float = 30.0, api_key: str | None = None, ssl=None,
                       **config) -> AsyncIterator[dict]:
    """Send audio chunks to /v1/recognize; yield every event until `end`. A dropped connection
    is resumed (for up to `reconnect_for` seconds of trying; 0: never) with no event lost or
    repeated; a `resumed` event marks each resumption."""
    stream = ResumingStream(url, chunks, config_message(**config), reconnect_for, api_key, ssl)
    async for event in stream.events():
        if event["type"] == "error" and raise_errors:
            raise ServerError(event["code"], event["message"])
        yield event


async def subscribe(url: str, session_id: str, read_token: str, api_key: str | None = None,
                    ssl=None) -> AsyncIterator[dict]:
    """The live events of a session (its `session` event gives the read token), until its end.
    A subscriber that reads too slowly is cut off: ServerError too_slow."""
    async with open_socket(url, f"/v1/subscribe/{session_id}", api_key, ssl, {"X-Read-Token": read_token}) as ws:
        try:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "error":
                    raise ServerError(event["code"], event["message"])
                yield event
        except ConnectionClosedError as err:
            if err.rcvd is None or err.rcvd.code != 1008:
                raise
            raise ServerError(err.rcvd.reason, "the server closed the subscription") from err


async def suggest(url: str, text: str, count: int | None = None, api_key: str | None = None,
                  ssl=None) -> list[dict]:
    async with open_socket(url, "/v1/suggest", api_key, ssl) as ws:
        request = {"type": "suggest", "text": text, **({"count": count} if count else {})}
        await ws.send(json.dumps(request))
        event = json.loads(await ws.recv())
        if event["type"] == "error":
            raise ServerError(event["code"], event["message"])
        return event["words"]


def file_chunks(path, chunk_ms: int = 100, encoding: str = "pcm_s16le") -> tuple[list[bytes], int]:
    """A file as raw audio chunks of `chunk_ms` in `encoding`, and its sample rate."""
    samples, rate = load_for_streaming(path)
    return encode_chunks(samples, rate, chunk_ms, encoding), rate


def encode_chunks(samples: np.ndarray, rate: int, chunk_ms: int = 100, encoding: str = "pcm_s16le") -> list[bytes]:
    """Float samples as raw audio chunks of `chunk_ms` in `encoding`."""
    if encoding == "pcm_s16le":
        samples = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    else:
        samples = samples.astype("<f4")
    return [chunk.tobytes() for chunk in chunks(samples, rate, chunk_ms)]


async def paced(chunks: list[bytes], seconds_per_chunk: float) -> AsyncIterator[bytes]:
    """Chunks at real-time pace, as a microphone would send them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, chunk in enumerate(chunks):
        delay = start + index * seconds_per_chunk - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield chunk


class GrpcClient:
    """Blocking gRPC client: `with GrpcClient("127.0.0.1:50051") as client: ...`.
    `tls=True` for a daemon with [tls] set (`ca`: a PEM file to trust instead of the system's
    CAs, e.g. a self-signed certificate); `api_key` goes with every call."""

    def __init__(self, address: str, credentials=None, api_key: str | None = None, tls: bool = False,
                 ca: str | None = None):
        import grpc

        from streamrnn.serve.tls import grpc_channel_credentials
        from streamrnn_client.proto import streamrnn_pb2 as pb
        from streamrnn_client.proto import streamrnn_pb2_grpc as pb_grpc
        self.pb = pb
        if credentials is None and (tls or ca):
            credentials = grpc_channel_credentials(ca)
        self.channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        self.stub = pb_grpc.RecognizerStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.channel.close()

    @staticmethod
    def config(sample_rate=16000, encoding="pcm_s16le", interim_results=True, suggestions=None, phrases=()):
        """A RecognitionConfig message (the session's options, named as in the WebSocket API)."""
        from streamrnn_client.proto import streamrnn_pb2 as pb
        encodings = {"pcm_s16le": pb.PCM_S16LE, "f32le": pb.F32LE}
        return pb.RecognitionConfig(sample_rate=sample_rate, encoding=encodings[encoding],
                                    interim_results=interim_results, suggestions=suggestions, phrases=list(phrases))

    def streaming_recognize(self, chunks: Iterable[bytes], **config):
        """Yield RecognitionEvent messages for the audio chunks."""
        def requests():
            yield self.pb.StreamingRecognizeRequest(config=self.config(**config))
            for chunk in chunks:
                yield self.pb.StreamingRecognizeRequest(audio=chunk)
            yield self.pb.StreamingRecognizeRequest(eof=True)
        return self.stub.StreamingRecognize(requests(), metadata=self.metadata)

    def resuming_recognize(self, chunks: Iterable[bytes], reconnect_for: float = 30.0, **config):
        """Like `streaming_recognize`, but a stream that drops (the connection is cut) is resumed on
        a new call, for up to `reconnect_for` seconds of trying: the audio the server lacks is sent
        again and every event comes once (Ack events are used, not yielded; a `resumed` event marks
        each resumption)."""
        return ResumingGrpcStream(self, chunks, self.config(**config), reconnect_for).events()

    def recognize(self, audio: bytes, **config):
        return self.stub.Recognize(self.pb.RecognizeRequest(config=self.config(**config), audio=audio),
                                   metadata=self.metadata)

    def subscribe(self, session_id: str, read_token: str):
        return self.stub.Subscribe(self.pb.SubscribeRequest(session_id=session_id, read_token=read_token),
                                   metadata=self.metadata)

    def suggest(self, text: str, count: int = 0):
        return self.stub.Suggest(self.pb.SuggestRequest(text=text, count=count), metadata=self.metadata)

    def score(self, text: str):
        return self.stub.Score(self.pb.ScoreRequest(text=text), metadata=self.metadata)


class ResumingGrpcStream:
    """The gRPC twin of ResumingStream, for blocking code: a thread reads the audio source into
    a buffer, each call's request iterator (run by gRPC's own thread) sends from it."""

    def __init__(self, client: GrpcClient, chunks: Iterable[bytes], config, reconnect_for: float):
        self.client, self.config, self.reconnect_for = client, config, reconnect_for
        self.buffer, self.changed = AudioBuffer(), threading.Condition()
        self.source_done = False
        self.session = None  # the SessionStarted event, once there is one
        self.last_seq = 0
        threading.Thread(target=self.read_source, args=(chunks,), daemon=True).start()

    def read_source(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            with self.changed:
                self.buffer.add(chunk)
                self.changed.notify_all()
        with self.changed:
            self.source_done = True
            self.changed.notify_all()

    def events(self):
        import grpc
        backoff = Backoff(self.reconnect_for)
        while True:
            start = CallStart()
            call = self.client.stub.StreamingRecognize(self.requests(start), metadata=self.client.metadata)
            try:
                for message in call:
                    if self.started(message, start):
                        backoff.reset()
                    if message.WhichOneof("event") == "ack" or 0 < message.seq <= self.last_seq:
                        continue
                    self.last_seq = message.seq or self.last_seq
                    yield message
                    if message.WhichOneof("event") == "end":
                        return
                return
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or self.session is None or not self.reconnect_for:
                    raise
                time.sleep(backoff.next_delay(err))
            finally:
                start.cancel()
                call.cancel()

    def started(self, message, start: CallStart) -> bool:
        """Session, Resumed and Ack events move the audio along; True when the call has started."""
        kind = message.WhichOneof("event")
        if kind == "session":
            self.session = message.session
            start.set(0)
        elif kind in ("resumed", "ack"):
            offset = message.resumed.ack if kind == "resumed" else message.ack.bytes
            with self.changed:
                self.buffer.acknowledge(offset)
            if kind == "resumed":
                start.set(offset)
        return kind in ("session", "resumed")

    def requests(self, start: CallStart):
        pb = self.client.pb
        if self.session is None:
            yield pb.StreamingRecognizeRequest(config=self.config)
        else:
            yield pb.StreamingRecognizeRequest(resume=pb.ResumeRequest(
                session_id=self.session.session_id, resume_token=self.session.resume_token, last_seq=self.last_seq))
        offset = start.wait()
        while start.offset is not None:  # None once the call is over
            with self.changed:
                chunk = self.buffer.read(offset)
                if not chunk and not self.source_done:
                    self.changed.wait(0.1)
                    continue
            if not chunk:
                yield pb.StreamingRecognizeRequest(eof=True)
                return
            yield pb.StreamingRecognizeRequest(audio=chunk)
            offset += len(chunk)


class CallStart:
    """Where one call's audio starts (known once the server answers), or None once it is over."""

    def __init__(self):
        self.event, self.offset = threading.Event(), 0

    def set(self, offset: int) -> None:
        self.offset = offset
        self.event.set()

    def cancel(self) -> None:
        self.offset = None
        self.event.set()

    def wait(self) -> int | None:
        self.event.wait()
        return self.offset


def event_from_proto(message) -> dict:
    """A gRPC RecognitionEvent as the same dict the WebSocket API sends."""
    from google.protobuf.json_format import MessageToDict
    kind = message.WhichOneof("event")
    body = MessageToDict(getattr(message, kind), preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
    if kind == "partial":
        body.pop("words", None)
    for key in ("bytes", "ack"):  # 64-bit integers come as strings
        if key in body:
            body[key] = int(body[key])
    return {"type": kind, **body, **({"seq": message.seq} if message.seq else {})}
