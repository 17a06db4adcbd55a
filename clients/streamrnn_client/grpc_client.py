"""The blocking client of a streamrnn daemon's gRPC API (streamrnn.v1.Recognizer).

    with GrpcClient("127.0.0.1:50051") as client:
        for message in client.resuming_recognize(chunks, sample_rate=16000):
            print(event_from_proto(message))
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import grpc
from google.protobuf.json_format import MessageToDict

from streamrnn_client.proto import streamrnn_pb2 as pb
from streamrnn_client.proto import streamrnn_pb2_grpc as pb_grpc
from streamrnn_client.protocol import NO_REPLICA, EventType, SessionOptions
from streamrnn_client.resume import ResumeState
from streamrnn_client.tls import grpc_channel_credentials

ENCODINGS = {"pcm_s16le": pb.PCM_S16LE, "f32le": pb.F32LE}


class GrpcClient:
    """Blocking gRPC client: `with GrpcClient("127.0.0.1:50051") as client: ...`.
    `tls=True` for a daemon with [tls] set (`ca`: a PEM file to trust instead of the system's
    CAs, e.g. a self-signed certificate); `api_key` goes with every call."""

    def __init__(self, address: str, credentials=None, api_key: str | None = None, tls: bool = False,
                 ca: str | None = None):
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
    def config(*args, **options):
        """A RecognitionConfig message; takes protocol.SessionOptions' fields (sample_rate, encoding,
        interim_results, suggestions, phrases: the session's options, named as in the WebSocket API)."""
        options = SessionOptions(*args, **options)
        return pb.RecognitionConfig(sample_rate=options.sample_rate, encoding=ENCODINGS[options.encoding],
                                    interim_results=options.interim_results, suggestions=options.suggestions,
                                    phrases=list(options.phrases or ()))

    def streaming_recognize(self, chunks: Iterable[bytes], **options):
        """Yield RecognitionEvent messages for the audio chunks."""
        def requests():
            yield pb.StreamingRecognizeRequest(config=self.config(**options))
            for chunk in chunks:
                yield pb.StreamingRecognizeRequest(audio=chunk)
            yield pb.StreamingRecognizeRequest(eof=True)
        return self.stub.StreamingRecognize(requests(), metadata=self.metadata)

    def resuming_recognize(self, chunks: Iterable[bytes], reconnect_for: float = 30.0, **options):
        """Like `streaming_recognize`, but a stream that drops (the connection is cut) is resumed on
        a new call, for up to `reconnect_for` seconds of trying: the audio the server lacks is sent
        again and every event comes once (Ack events are used, not yielded; a `resumed` event marks
        each resumption)."""
        return ResumingGrpcStream(self, chunks, self.config(**options), reconnect_for).events()

    def recognize(self, audio: bytes, **options):
        return self.stub.Recognize(pb.RecognizeRequest(config=self.config(**options), audio=audio),
                                   metadata=self.metadata)

    def subscribe(self, session_id: str, read_token: str):
        return self.stub.Subscribe(pb.SubscribeRequest(session_id=session_id, read_token=read_token),
                                   metadata=self.metadata)

    def suggest(self, text: str, count: int = 0):
        return self.stub.Suggest(pb.SuggestRequest(text=text, count=count), metadata=self.metadata)

    def score(self, text: str):
        return self.stub.Score(pb.ScoreRequest(text=text), metadata=self.metadata)


def cut_off(err: grpc.RpcError) -> bool:
    """Whether the call was cut on the way rather than refused: the connection dropped
    (UNAVAILABLE), or a proxy reset the stream because the server behind it went away (nginx's
    grpc_pass answers a replica's death with RST_STREAM, which gRPC reports as INTERNAL)."""
    code = err.code()
    return code == grpc.StatusCode.UNAVAILABLE or (code == grpc.StatusCode.INTERNAL and
                                                   "RST_STREAM" in (err.details() or ""))


def proxy_unavailable(err: grpc.RpcError) -> bool:
    """Whether a load balancer had no replica for the call (UNAVAILABLE with protocol.NO_REPLICA):
    worth trying again, for a new session as for a resume."""
    return err.code() == grpc.StatusCode.UNAVAILABLE and NO_REPLICA in (err.details() or "")


class ResumingGrpcStream:
    """The gRPC twin of websocket.ResumingStream, for blocking code, on the same ResumeState: a
    thread reads the audio source into its buffer, each call's request iterator (run by gRPC's own
    thread) sends from it; `changed` guards the state between them."""

    def __init__(self, client: GrpcClient, chunks: Iterable[bytes], config, reconnect_for: float):
        self.client, self.config = client, config
        self.state, self.changed = ResumeState(reconnect_for), threading.Condition()
        threading.Thread(target=self.read_source, args=(chunks,), daemon=True).start()

    def read_source(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            with self.changed:
                self.state.buffer.add(chunk)
                self.changed.notify_all()
        with self.changed:
            self.state.source_done = True
            self.changed.notify_all()

    def events(self):
        while True:
            start = CallStart()
            call = self.client.stub.StreamingRecognize(self.requests(start), metadata=self.client.metadata)
            try:
                for message in call:
                    kind = self.moved(message, start)
                    if kind == EventType.ACK or not self.state.is_new(message.seq):
                        continue
                    yield message
                    if kind == EventType.END:
                        return
                return
            except grpc.RpcError as err:
                retryable = (cut_off(err) and self.state.has_session) or proxy_unavailable(err)
                time.sleep(self.state.retry_delay(err, retryable))
            finally:
                start.cancel()
                call.cancel()

    def moved(self, message, start: CallStart) -> str:
        """Session, Resumed and Ack events move the audio along; returns the event's type."""
        kind = message.WhichOneof("event")
        with self.changed:
            if kind == EventType.SESSION:
                start.set(self.state.session_started(message.session.session_id, message.session.resume_token))
            elif kind == EventType.RESUMED:
                start.set(self.state.resumed(message.resumed.ack))
            elif kind == EventType.ACK:
                self.state.buffer.acknowledge(message.ack.bytes)
        return kind

    def requests(self, start: CallStart):
        with self.changed:
            resume = self.state.resume_request() if self.state.has_session else None
        if resume is None:
            yield pb.StreamingRecognizeRequest(config=self.config)
        else:
            yield pb.StreamingRecognizeRequest(resume=pb.ResumeRequest(**resume))
        offset = start.wait()
        while start.offset is not None:  # None once the call is over
            with self.changed:
                chunk = self.state.pending(offset)
                if chunk == b"":
                    self.changed.wait(0.1)
                    continue
            if chunk is None:
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
    kind = message.WhichOneof("event")
    body = MessageToDict(getattr(message, kind), preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
    if kind == EventType.PARTIAL:
        body.pop("words", None)
    for key in ("bytes", "ack"):  # 64-bit integers come as strings
        if key in body:
            body[key] = int(body[key])
    return {"type": kind, **body, **({"seq": message.seq} if message.seq else {})}
