"""Python client library for a streamrnn daemon, over WebSocket or gRPC.

    async for event in stream_audio("ws://127.0.0.1:8080", chunks, sample_rate=16000):
        print(event)
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import numpy as np
from websockets.asyncio.client import connect

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


async def stream_audio(url: str, chunks: Iterable[bytes] | AsyncIterable[bytes], raise_errors: bool = True,
                       **config) -> AsyncIterator[dict]:
    """Send audio chunks to /v1/recognize; yield every event until `end`."""
    async with connect(url.rstrip("/") + "/v1/recognize", max_size=None) as ws:
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


async def subscribe(url: str, session_id: str) -> AsyncIterator[dict]:
    """The live events of a session, until its end."""
    async with connect(f"{url.rstrip('/')}/v1/subscribe/{session_id}") as ws:
        async for message in ws:
            event = json.loads(message)
            if event["type"] == "error":
                raise ServerError(event["code"], event["message"])
            yield event


async def suggest(url: str, text: str, count: int | None = None) -> list[dict]:
    async with connect(url.rstrip("/") + "/v1/suggest") as ws:
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
    """Blocking gRPC client: `with GrpcClient("127.0.0.1:50051") as client: ...`."""

    def __init__(self, address: str, credentials=None):
        import grpc

        from .proto import streamrnn_pb2 as pb
        from .proto import streamrnn_pb2_grpc as pb_grpc
        self.pb = pb
        self.channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        self.stub = pb_grpc.RecognizerStub(self.channel)

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
        return self.stub.StreamingRecognize(requests())

    def recognize(self, audio: bytes, **config):
        return self.stub.Recognize(self.pb.RecognizeRequest(config=self.config(**config), audio=audio))

    def subscribe(self, session_id: str):
        return self.stub.Subscribe(self.pb.SubscribeRequest(session_id=session_id))

    def suggest(self, text: str, count: int = 0):
        return self.stub.Suggest(self.pb.SuggestRequest(text=text, count=count))

    def score(self, text: str):
        return self.stub.Score(self.pb.ScoreRequest(text=text))


def event_from_proto(message) -> dict:
    """A gRPC RecognitionEvent as the same dict the WebSocket API sends."""
    from google.protobuf.json_format import MessageToDict
    kind = message.WhichOneof("event")
    body = MessageToDict(getattr(message, kind), preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
    if kind == "partial":
        body.pop("words", None)
    return {"type": kind, **body}
