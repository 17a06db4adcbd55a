"""Protocol behaviour of a real daemon on loopback: errors, health, metrics, stubs.
Each error leaves the daemon and other sessions working."""
import asyncio
import filecmp
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from daemon import metric
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.websocket import stream_audio

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.dumps({"type": "config", "sample_rate": 16000, "encoding": "f32le"})


def noise_chunks(seconds=1.0, chunk=1600):
    samples = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.1).astype("<f4")
    return [samples[i:i + chunk].tobytes() for i in range(0, len(samples), chunk)]


async def collect(url, **config):
    return [e async for e in stream_audio(url, noise_chunks(), encoding="f32le", **config)]


async def ws_exchange(url, path, messages, read=4):
    """Send messages, return up to `read` events (fewer if the server closes)."""
    events = []
    async with connect(url + path) as ws:
        for message in messages:
            await ws.send(message)
        try:
            for _ in range(read):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        except (ConnectionClosed, TimeoutError):
            pass
    return events


def assert_still_serving(daemon):
    events = asyncio.run(collect(daemon.url))
    assert events[0]["type"] == "session" and events[-1]["type"] == "end"
    assert daemon.alive


@pytest.mark.parametrize("messages, code", [
    (["{not json"], "bad_message"),
    ([json.dumps({"type": "config", "sample_rate": 12345})], "bad_config"),
    ([json.dumps({"type": "config", "encoding": "mp3"})], "bad_config"),
    ([json.dumps({"type": "config", "sample_rate": "fast"})], "bad_config"),
    ([json.dumps({"type": "config", "volume": 11})], "bad_config"),
    ([json.dumps({"type": "hello"})], "config_required"),
    ([b"\x00\x00" * 800], "config_required"),
])
def test_bad_session_start_gets_a_named_error(strict_daemon, messages, code):
    events = asyncio.run(ws_exchange(strict_daemon.url, "/v1/recognize", messages))
    assert events[0]["type"] == "error" and events[0]["code"] == code, events
    assert events[0]["message"]
    assert_still_serving(strict_daemon)


@pytest.mark.parametrize("message, code", [
    (json.dumps({"type": "pause"}), "bad_message"),
    ("[1, 2]", "bad_message"),
    (b"\x00\x00\x00", "bad_audio"),
    (np.array([np.nan] * 4, dtype="<f4").tobytes(), "bad_audio"),
])
def test_bad_message_mid_stream_keeps_the_session(strict_daemon, message, code):
    chunks = noise_chunks()
    events = asyncio.run(ws_exchange(strict_daemon.url, "/v1/recognize",
                                     [CONFIG, chunks[0], message, chunks[1], json.dumps({"type": "eof"})],
                                     read=50))
    kinds = [e["type"] for e in events]
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == [code]
    assert kinds[0] == "session" and kinds[-1] == "end"


def test_websocket_audio_is_not_deflated(strict_daemon):
    """A client that offers permessage-deflate (websockets and browsers do) gets no extension:
    compressing PCM chunks cost more CPU than anything else on the network side."""
    async def negotiated():
        async with connect(strict_daemon.url + "/v1/recognize", compression="deflate") as ws:
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert asyncio.run(negotiated()) is None
    assert_still_serving(strict_daemon)


def test_unknown_session_cannot_be_subscribed(strict_daemon):
    events = asyncio.run(ws_exchange(strict_daemon.url, "/v1/subscribe/no-such-session", []))
    assert events == [{"type": "error", "code": "unknown_session",
                       "message": "no live session 'no-such-session' with that read token"}]
    with GrpcClient(strict_daemon.grpc) as client:
        with pytest.raises(grpc.RpcError) as info:
            list(client.subscribe("no-such-session", "some-token"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_busy_server_says_so_at_once(strict_daemon):
    before = metric(strict_daemon, "streamrnn_sessions_active ")

    async def scenario():
        held = [await connect(strict_daemon.url + "/v1/recognize") for _ in range(3)]
        for ws in held:
            await ws.send(CONFIG)
            assert json.loads(await ws.recv())["type"] == "session"
        refused = await ws_exchange(strict_daemon.url, "/v1/recognize", [CONFIG])
        grpc_refusals = await asyncio.to_thread(grpc_busy_refusals, strict_daemon)
        for ws in held:
            await ws.close()
        return refused, grpc_refusals
    refused, grpc_refusals = asyncio.run(scenario())
    wait_for_sessions(strict_daemon, before)  # closed sessions end just after the close; later tests need the room
    assert refused[0]["code"] == "busy"
    for error in grpc_refusals:  # not DEADLINE_EXCEEDED: refused at once, not left hanging
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 3 sessions" in error.details()


def wait_for_sessions(daemon, count: float, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while metric(daemon, "streamrnn_sessions_active ") > count:
        assert time.monotonic() < deadline, f"more than {count:g} sessions still open after {timeout_s} s"
        time.sleep(0.05)


def grpc_busy_refusals(daemon) -> list[grpc.RpcError]:
    """What a streaming client that would go on for a minute and a unary client get."""
    errors = []
    with GrpcClient(daemon.grpc) as client:
        def requests():
            yield client.pb.StreamingRecognizeRequest(config=client.config(encoding="f32le"))
            threading.Event().wait(60)
        for call in (lambda: list(client.stub.StreamingRecognize(requests(), timeout=60)),
                     lambda: client.stub.Recognize(client.pb.RecognizeRequest(audio=b"\0\0"), timeout=60)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            errors.append(info.value)
    return errors


def test_grpc_errors_are_status_codes(strict_daemon):
    with GrpcClient(strict_daemon.grpc) as client:
        with pytest.raises(grpc.RpcError) as info:
            list(client.streaming_recognize(noise_chunks(), sample_rate=12345))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unsupported sample rate 12345" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            list(client.streaming_recognize([b"\x01\x02\x03"], encoding="pcm_s16le"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "even number of bytes" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            client.score("!!!")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_still_serving(strict_daemon)


def test_grpc_stream_without_config_is_refused(strict_daemon):
    from streamrnn_client.proto import streamrnn_pb2 as pb
    with GrpcClient(strict_daemon.grpc) as client:
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.StreamingRecognize(iter([pb.StreamingRecognizeRequest(audio=b"\x00\x00")])))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_grpc_events_match_websocket_events(strict_daemon):
    ws_events = asyncio.run(collect(strict_daemon.url, suggestions=2))
    with GrpcClient(strict_daemon.grpc) as client:
        grpc_events = [event_from_proto(m) for m in
                       client.streaming_recognize(noise_chunks(), encoding="f32le", suggestions=2)]
    assert any(e["type"] == "ack" for e in grpc_events)
    grpc_events = [e for e in grpc_events if e["type"] != "ack"]  # stream_audio keeps acks to itself
    strip = lambda events: [{k: v for k, v in e.items() if k not in ("session_id", "read_token", "resume_token")}
                            for e in events]
    assert json.loads(json.dumps(strip(grpc_events)), parse_float=lambda x: round(float(x), 3)) == \
        json.loads(json.dumps(strip(ws_events)), parse_float=lambda x: round(float(x), 3))


def test_health_and_reflection(strict_daemon):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    channel = grpc.insecure_channel(strict_daemon.grpc)
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="streamrnn.v1.Recognizer"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "streamrnn.v1.Recognizer" in services and "grpc.health.v1.Health" in services
    channel.close()


def test_http_endpoints(strict_daemon):
    assert urllib.request.urlopen(strict_daemon.http + "/healthz").read() == b"ok\n"
    metrics = urllib.request.urlopen(strict_daemon.http + "/metrics").read().decode()
    assert "streamrnn_sessions_total" in metrics and "streamrnn_chunk_latency_seconds_bucket" in metrics
    page = urllib.request.urlopen(strict_daemon.http + "/").read().decode()
    assert "<html" in page.lower()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(strict_daemon.http + "/nope")
    assert info.value.code == 404


def test_suggest_over_websocket_and_grpc(strict_daemon):
    events = asyncio.run(ws_exchange(strict_daemon.url, "/v1/suggest",
                                     ["the cat", json.dumps({"type": "suggest", "text": "the", "count": 99})], 2))
    assert events[0]["type"] == "suggestions" and len(events[0]["words"]) == 3
    assert events[1]["type"] == "error" and "count must be" in events[1]["message"]
    with GrpcClient(strict_daemon.grpc) as client:
        assert len(client.suggest("the cat", 2).words) == 2
        assert client.score("the cat sat").perplexity > 1


def test_committed_stubs_match_the_proto(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-Istreamrnn_client/proto={ROOT / 'protos'}",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    str(ROOT / "protos" / "streamrnn.proto")], check=True, cwd=ROOT)
    for name in ("streamrnn_pb2.py", "streamrnn_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / "streamrnn_client" / "proto" / name, ROOT / "clients" / "streamrnn_client" / "proto" / name,
                           shallow=False), f"{name} is stale: regenerate it from protos/streamrnn.proto"


def test_a_first_audio_message_of_odd_bytes_gets_bad_audio_and_an_end(daemon):
    """Audio with no config before it is fed as pcm_s16le: 3 bytes are no whole samples."""
    events = asyncio.run(ws_exchange(daemon.url, "/v1/recognize", [b"\x00\x01\x02", json.dumps({"type": "eof"})]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session" and "end" in kinds, events
    error = next(e for e in events if e["type"] == "error")
    assert error["code"] == "bad_audio" and "even number of bytes" in error["message"]
    assert "Traceback" not in daemon.log
    assert_still_serving(daemon)


@pytest.mark.parametrize("port_flag", ["--grpc-port", "--port"])
def test_a_port_in_use_stops_a_second_daemon_with_a_one_line_error(strict_daemon, tmp_path, port_flag):
    taken = strict_daemon.grpc_port if port_flag == "--grpc-port" else strict_daemon.http_port
    free = ["--port", "0"] if port_flag == "--grpc-port" else ["--grpc-port", "0"]
    done = subprocess.run([sys.executable, "-m", "streamrnn", "serve", port_flag, str(taken), *free],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("streamrnn: error:") and "in use" in last and str(taken) in last, done.stderr
    assert strict_daemon.alive
