"""Python client library for a streamrnn daemon, over WebSocket or gRPC.

    async for event in stream_audio("ws://127.0.0.1:8080", chunks, sample_rate=16000):
        print(event)

Every call takes `api_key` (when the daemon has keys configured) and, for wss:// URLs,
`ssl` (an ssl.SSLContext, e.g. from streamrnn.tls.client_context(ca="cert.pem")).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from .transcribe import load_for_streaming


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
    return connect(url.rstrip("/") + path, additional_headers=headers, ssl=ssl, max_size=None)


async def stream_audio(url: str, chunks: Iterable[bytes] | AsyncIterable[bytes], raise_errors: bool = True,
                       api_key: str | None = None, ssl=None, **config) -> AsyncIterator[dict]:
    """Send audio chunks to /v1/recognize; yield every event until `end`."""
    async with open_socket(url, "/v1/recognize", api_key, ssl) as ws:
        await ws.send(json.dumps(config_message(**config)))

        async def send_all():
            async for chunk in _aiter(chunks):
                await ws.send(chunk)
            await ws.send(json.dumps({"type": "eof"}))

        sender = asyncio.create_task(send_all())
        try:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "error" and raise_errors:
                    raise ServerError(event["code"], event["message"])
                yield event
                if event["type"] == "end":
                    break
        finally:
            sender.cancel()


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
    if encoding == "pcm_s16le":
        samples = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    else:
        samples = samples.astype("<f4")
    step = max(1, rate * chunk_ms // 1000)
    return [samples[i:i + step].tobytes() for i in range(0, len(samples), step)], rate


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

        from .proto import streamrnn_pb2 as pb
        from .proto import streamrnn_pb2_grpc as pb_grpc
        from .tls import grpc_channel_credentials
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

    def config(self, sample_rate=16000, encoding="pcm_s16le", interim_results=True, suggestions=None,
               phrases=()):
        encodings = {"pcm_s16le": self.pb.PCM_S16LE, "f32le": self.pb.F32LE}
        return self.pb.RecognitionConfig(sample_rate=sample_rate, encoding=encodings[encoding],
                                         interim_results=interim_results, suggestions=suggestions,
                                         phrases=list(phrases))

    def streaming_recognize(self, chunks: Iterable[bytes], **config):
        """Yield RecognitionEvent messages for the audio chunks."""
        def requests():
            yield self.pb.StreamingRecognizeRequest(config=self.config(**config))
            for chunk in chunks:
                yield self.pb.StreamingRecognizeRequest(audio=chunk)
            yield self.pb.StreamingRecognizeRequest(eof=True)
        return self.stub.StreamingRecognize(requests(), metadata=self.metadata)

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


def event_from_proto(message) -> dict:
    """A gRPC RecognitionEvent as the same dict the WebSocket API sends."""
    from google.protobuf.json_format import MessageToDict
    kind = message.WhichOneof("event")
    body = MessageToDict(getattr(message, kind), preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
    if kind == "partial":
        body.pop("words", None)
    return {"type": kind, **body}
