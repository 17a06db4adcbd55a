"""Limits against real daemons on loopback with tiny models: message size, audio per session,
idle timeout, pace, and a subscriber that stops reading (bounded queue, cut off,
the speaker untouched). Each limit gets its named error or end reason."""
import asyncio
import json
import socket
import threading
import time

import grpc
import numpy as np
import pytest
from daemon import Daemon, metric
from support import tiny_daemon_config
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamrnn.config import load_config
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.serve.hub import Hub
from streamrnn_client.audio import paced
from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.websocket import stream_audio

CONFIG = json.dumps({"type": "config", "sample_rate": 16000, "encoding": "f32le"})
CHUNK_S = 0.1


def noise_chunks(seconds, chunk_s=CHUNK_S, seed=0):
    samples = (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype("<f4")
    step = int(16000 * chunk_s)
    return [samples[i:i + step].tobytes() for i in range(0, len(samples), step)]


@pytest.fixture(scope="module")
def limited(tiny_models, tmp_path_factory):
    """Small messages, 2 s of audio per session, 1 s idle, real-time pace after a 0.5 s burst; a word
    bonus so that the tiny model's search spells words from noise, whose finals the tests look for."""
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("limited"),
                                       "[limits]\nmax_message_bytes = 8192\ngrpc_max_message_bytes = 100000\n"
                                       "max_session_audio_s = 2.0\nidle_timeout_s = 1.0\n"
                                       "max_realtime_factor = 1.0\nrealtime_burst_s = 0.5\n"
                                       "[decoder]\nword_score = 5.0\n"))
    yield server
    server.stop()


async def events_of(url, chunks):
    return [e async for e in stream_audio(url, chunks, raise_errors=False, encoding="f32le")]


def test_oversized_websocket_message_closes_with_1009(limited):
    async def scenario():
        async with connect(limited.url + "/v1/recognize") as ws:
            await ws.send(CONFIG)
            await ws.recv()
            await ws.send(b"\0" * 8196)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.recv()
            return info.value.rcvd
    closed = asyncio.run(scenario())
    assert closed.code == 1009  # message too big


def test_oversized_grpc_message_is_resource_exhausted(limited):
    with GrpcClient(limited.grpc) as client:
        with pytest.raises(grpc.RpcError) as info:
            list(client.streaming_recognize([b"\0" * 100004], encoding="f32le"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            client.recognize(b"\0" * 100004, encoding="f32le")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_session_ends_at_its_audio_limit(limited):
    chunks = noise_chunks(3.0)
    events = asyncio.run(events_of(limited.url, paced(chunks, CHUNK_S)))
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "max_duration"
    assert events[-2]["type"] in ("final", "suggestions")
    assert max(e["end"] for e in events if e["type"] == "final") <= 2.0
    with GrpcClient(limited.grpc) as client:
        grpc_events = [event_from_proto(m) for m in client.streaming_recognize(paced_sync(chunks), encoding="f32le")]
    assert grpc_events[-1] == {"type": "end", "session_id": grpc_events[0]["session_id"], "reason": "max_duration",
                               "seq": grpc_events[-1]["seq"]}
    with GrpcClient(limited.grpc) as client:  # unary: whole audio at once, so all of it or an error
        with pytest.raises(grpc.RpcError) as info:
            client.recognize(b"\0\0" * int(16000 * 2.5))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == "the audio is longer than the limit of 2 s per session"
        client.recognize(b"\0\0" * int(16000 * 1.5))  # within the limit; not held to the real-time pace


def paced_sync(chunks):
    """Chunks at (at most) real-time pace, for the blocking gRPC client's request iterator."""
    for index, chunk in enumerate(chunks):
        time.sleep(CHUNK_S if index else 0)
        yield chunk


def test_idle_session_ends_with_its_final(limited):
    async def scenario():
        async with connect(limited.url + "/v1/recognize") as ws:
            await ws.send(CONFIG)
            for chunk in noise_chunks(0.3):
                await ws.send(chunk)
            return [json.loads(m) async for m in ws]  # nothing more is sent; the server ends it
    events = asyncio.run(scenario())
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "idle"
    assert any(e["type"] == "final" for e in events)

    release = threading.Event()
    with GrpcClient(limited.grpc) as client:
        def requests():
            yield client.pb.StreamingRecognizeRequest(config=client.config(encoding="f32le"))
            for chunk in noise_chunks(0.3):
                yield client.pb.StreamingRecognizeRequest(audio=chunk)
            release.wait(120)  # a client that goes quiet without closing its stream
        grpc_events = [event_from_proto(m) for m in client.stub.StreamingRecognize(requests())]
        release.set()
    assert grpc_events[-1]["reason"] == "idle" and any(e["type"] == "final" for e in grpc_events)


def test_silent_connection_is_closed(limited):
    async def scenario():
        async with connect(limited.url + "/v1/recognize") as ws:
            return [json.loads(m) async for m in ws]
    with pytest.raises(ConnectionClosed) as info:
        asyncio.run(scenario())
    assert info.value.rcvd.code == 1008 and info.value.rcvd.reason == "idle"
    release = threading.Event()
    with GrpcClient(limited.grpc) as client:
        def nothing():
            release.wait(120)
            yield from ()
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.StreamingRecognize(nothing()))
        release.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no config or audio" in info.value.details()


def test_audio_faster_than_real_time_is_refused(limited):
    events = asyncio.run(events_of(limited.url, noise_chunks(1.5)))  # unpaced: far past the 0.5 s burst
    errors = [e for e in events if e["type"] == "error"]
    assert errors and {e["code"] for e in errors} == {"too_fast"}
    assert "faster than 1x real time" in errors[0]["message"]
    assert events[-1]["reason"] == "eof"  # the session went on
    with GrpcClient(limited.grpc) as client:
        with pytest.raises(grpc.RpcError) as info:
            list(client.streaming_recognize(noise_chunks(1.5), encoding="f32le"))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "real time" in info.value.details()


def test_hub_drops_partials_keeps_finals_and_cuts_off_a_slow_subscriber():
    async def scenario():
        hub = Hub()
        slow, fast = hub.subscribe(max_events=3, max_finals=2), hub.subscribe(max_events=3, max_finals=2)
        partial = lambda n: {"type": "partial", "text": str(n)}
        final = lambda n: {"type": "final", "text": str(n)}
        received = []
        for batch in ([partial(1), partial(2)], [partial(3), partial(4)], [final(1)], [partial(5), final(2)]):
            assert hub.publish(batch) == []
            while fast.events:
                received.append(await fast.get())
        assert [e["text"] for e in received] == ["1", "2", "3", "4", "1", "5", "2"]
        assert [e["text"] for e in slow.events] == ["1", "2", "3", "1", "2"]  # partials 4 and 5 dropped
        assert hub.publish([final(3)]) == [slow]  # a third unread final: cut off
        assert [await slow.get(), await slow.get()] == [slow.error(), None]
        assert slow.error()["code"] == "too_slow" and hub.subscriptions == {fast}
    asyncio.run(scenario())


FAST_ENGINE = '[decoder]\nmethod = "greedy"\n[endpoint]\nmax_utterance_s = 0.5\n'  # a final every 0.5 s


@pytest.fixture(scope="module")
def backpressure_daemon(tiny_models, tmp_path_factory):
    """A daemon whose subscribers may hold 4 events and 2 unread finals."""
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("backpressure"), FAST_ENGINE +
                                       "[limits]\nsubscriber_queue = 4\nsubscriber_max_finals = 2\n"))
    yield server
    server.stop()


class StuckSubscriber:
    """A raw WebSocket subscriber with a tiny receive buffer that reads nothing until told."""

    def __init__(self, daemon, session_id, read_token):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        self.sock.connect(("127.0.0.1", daemon.http_port))
        self.sock.sendall((f"GET /v1/subscribe/{session_id}?read_token={read_token} HTTP/1.1\r\n"
                           f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(1)
        assert self.buffer.startswith(b"HTTP/1.1 101"), self.buffer
        self.buffer = b""

    def read(self, size):
        while len(self.buffer) < size:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed before the WebSocket close frame")
            self.buffer += data
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def frames(self):
        """(opcode, payload) of each server frame, until the close frame."""
        while True:
            head = self.read(2)
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size >= 126:
                size = int.from_bytes(self.read(2 if size == 126 else 8), "big")
            payload = self.read(size)
            yield opcode, payload
            if opcode == 8:
                return


def test_slow_subscriber_is_cut_off_and_the_speaker_is_untouched(backpressure_daemon, tiny_models, tmp_path):
    daemon = backpressure_daemon
    per_second = noise_chunks(60.0, chunk_s=0.04)
    chunks = []

    async def speak():
        async with connect(daemon.url + "/v1/recognize") as ws:
            await ws.send(CONFIG)
            started = json.loads(await ws.recv())
            stuck = await asyncio.to_thread(StuckSubscriber, daemon, started["session_id"], started["read_token"])
            # A second of audio at a time, each once the daemon has decoded the last, until the
            # subscriber is cut off (however much the machine's socket buffers hold before that).
            for second in range(60):
                chunks.extend(per_second[25 * second:25 * (second + 1)])
                for chunk in chunks[-25:]:
                    await ws.send(chunk)
                while await asyncio.to_thread(metric, daemon, "streamrnn_audio_seconds_total ") < second + 0.99:
                    assert daemon.alive
                    await asyncio.sleep(0.05)
                if await asyncio.to_thread(metric, daemon, 'streamrnn_errors_total{code="too_slow"}'):
                    break
            await ws.send(json.dumps({"type": "eof"}))
            return stuck, [json.loads(m) async for m in ws]

    stuck, spoken = asyncio.run(speak())
    frames = list(stuck.frames())
    stuck.sock.close()
    opcode, close = frames[-1]
    assert opcode == 8 and int.from_bytes(close[:2], "big") == 1008 and close[2:] == b"too_slow"
    received = [json.loads(payload) for opcode, payload in frames[:-1]]
    assert received and all(e in spoken for e in received)
    assert not any(e["type"] == "end" for e in received)  # cut off before the end

    # The speaker's transcript is the engine's own for the same chunks: nothing lost or held up.
    engine = Recognizer(load_config(tiny_daemon_config(tiny_models, tmp_path, FAST_ENGINE)))
    session = engine.session(SessionOptions(encoding="f32le"))
    expected = [e for chunk in chunks for e in session.feed(chunk)] + session.finish()
    unnumbered = [{k: v for k, v in e.items() if k != "seq"} for e in spoken if e["type"] not in ("session", "end", "ack")]
    assert unnumbered == json.loads(json.dumps(expected))
    assert spoken[-1]["reason"] == "eof"

