"""Faults against a real daemon on loopback: dropped clients resume with nothing lost or
repeated, bad resumes get named errors, a subscriber that never reads does not slow the
speaker, and SIGTERM drains every session on both transports. (A corrupt model file at
start: tests/test_cli.py::test_corrupt_model_fails_at_start.)"""
import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
from daemon import Daemon, ProxyThread
from support import tiny_daemon_config
from websockets.asyncio.client import connect

from streamrnn.tools.soak import ChaosProxy, clip_chunks, finals_of, noise_clip
from streamrnn_client.audio import file_chunks
from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.proto import streamrnn_pb2 as pb
from streamrnn_client.resume import Backoff
from streamrnn_client.websocket import stream_audio, subscribe

CONFIG = {"type": "config", "sample_rate": 16000, "encoding": "f32le"}
# Short utterances: many finals per clip, so a drop falls between finals.
ENDPOINT = "[endpoint]\nmax_utterance_s = 0.6\n"


@pytest.fixture(scope="module")
def resume_daemon(tiny_models, tmp_path_factory):
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("resume"),
                                      ENDPOINT + "[resume]\nwindow_s = 5.0\nack_interval_s = 0.2\n"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chunks():
    return clip_chunks(noise_clip(6.0, seed=1))


async def uninterrupted(url, chunks):
    return [e async for e in stream_audio(url, chunks, encoding="f32le", reconnect_for=0)]


async def recv_until(ws, predicate, events):
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        events.append(event)
        if predicate(event):
            return event


def test_client_killed_mid_utterance_resumes_with_the_same_transcript(resume_daemon, chunks):
    expected = asyncio.run(uninterrupted(resume_daemon.url, chunks))

    async def scenario():
        before, after = [], []
        async with connect(resume_daemon.url + "/v1/recognize") as ws:
            await ws.send(json.dumps(CONFIG))
            session = json.loads(await ws.recv())
            listener = asyncio.create_task(collect_subscription(resume_daemon.url, session))
            for chunk in chunks[:len(chunks) // 2]:
                await ws.send(chunk)
            await recv_until(ws, lambda e: e["type"] == "final", before)
            ws.transport.abort()  # no close frame, no eof: the client died
        last_seq = max(e.get("seq", 0) for e in before)
        async with connect(resume_daemon.url + "/v1/recognize") as ws:
            await ws.send(json.dumps({"type": "resume", "session_id": session["session_id"],
                                      "resume_token": session["resume_token"], "last_seq": last_seq}))
            resumed = json.loads(await ws.recv())
            sent = 0
            for chunk in chunks:  # send again everything after what the server says it has
                if sent >= resumed["ack"]:
                    await ws.send(chunk)
                sent += len(chunk)
            await ws.send(json.dumps({"type": "eof"}))
            await recv_until(ws, lambda e: e["type"] == "end", after)
        return session, before, resumed, after, await listener

    session, before, resumed, after, heard = asyncio.run(scenario())
    assert resumed["type"] == "resumed" and resumed["session_id"] == session["session_id"]
    assert 0 < resumed["ack"] <= sum(map(len, chunks[:len(chunks) // 2]))
    assert resumed["ack"] % 4 == 0  # whole f32 samples
    received = [e for e in before + after if e["type"] in ("final", "end")]
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs))  # each once, in order
    assert finals_of(received) == finals_of(expected)
    assert after[-1]["reason"] == "eof"
    # The subscriber stayed attached through the reconnection and saw every final once.
    assert finals_of(heard) == finals_of(expected) and heard[-1]["type"] == "end"


async def collect_subscription(url, session):
    return [e async for e in subscribe(url, session["session_id"], session["read_token"])]


def test_client_library_resumes_after_cut_connections(resume_daemon, chunks):
    async def scenario():
        proxy = ChaosProxy("127.0.0.1", resume_daemon.http_port)
        url = await proxy.start()
        events = []

        async def slowly():
            for index, chunk in enumerate(chunks):
                if index in (10, 30, 45):
                    await asyncio.sleep(0.3)  # let acks and finals arrive, then cut
                    assert proxy.cut_all() == 1
                yield chunk

        async for event in stream_audio(url, slowly(), encoding="f32le"):
            events.append(event)
        await proxy.close()
        return events

    events = asyncio.run(scenario())
    expected = asyncio.run(uninterrupted(resume_daemon.url, chunks))
    assert sum(e["type"] == "resumed" for e in events) == 3
    assert finals_of(events) == finals_of(expected)
    assert [e["type"] for e in events if e["type"] in ("session", "end")] == ["session", "end"]


def test_stream_command_resumes_after_cut_connections(resume_daemon, chunks, tmp_path):
    audio = tmp_path / "clip.wav"
    soundfile.write(audio, np.frombuffer(b"".join(chunks), "<f4"), 16000)
    expected = asyncio.run(uninterrupted_file(resume_daemon.url, audio))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    proxy = ChaosProxy("127.0.0.1", resume_daemon.http_port, mean_life_s=1.0, seed=1)  # cuts about once a second
    url = asyncio.run_coroutine_threadsafe(proxy.start(), loop).result()
    try:
        result = subprocess.run([sys.executable, "-m", "streamrnn", "stream", str(audio), "--url", url,
                                 "--realtime", "--json"], capture_output=True, text=True, timeout=300)
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert proxy.cuts > 0 and any(e["type"] == "resumed" for e in events)
    assert finals_of(events) == finals_of(expected) and events[-1]["type"] == "end"


async def uninterrupted_file(url, path):
    file_audio, rate = file_chunks(path)
    return [e async for e in stream_audio(url, file_audio, sample_rate=rate, reconnect_for=0)]


def test_resume_errors_are_named(resume_daemon, chunks):
    async def attempt(message):
        async with connect(resume_daemon.url + "/v1/recognize") as ws:
            await ws.send(json.dumps(message))
            return json.loads(await ws.recv())

    async def scenario():
        finished = await uninterrupted(resume_daemon.url, chunks[:5])
        session = finished[0]
        dropped = await connect(resume_daemon.url + "/v1/recognize")
        await dropped.send(json.dumps(CONFIG))
        left = json.loads(await dropped.recv())
        dropped.transport.abort()
        replies = {
            "unknown": await attempt({"type": "resume", "session_id": "nope", "resume_token": "x"}),
            "token": await attempt({"type": "resume", "session_id": session["session_id"], "resume_token": "x"}),
            "malformed": await attempt({"type": "resume", "session_id": session["session_id"]}),
            # Within the window an ended session still answers, with its end.
            "ended": await attempt({"type": "resume", "session_id": session["session_id"],
                                    "resume_token": session["resume_token"], "last_seq": 10 ** 6}),
        }
        await asyncio.sleep(6.0)  # past the 5 s window
        for name, gone in (("expired_eof", session), ("expired_drop", left)):
            replies[name] = await attempt({"type": "resume", "session_id": gone["session_id"],
                                           "resume_token": gone["resume_token"]})
        return replies

    replies = asyncio.run(scenario())
    assert replies["unknown"] == {"type": "error", "code": "unknown_session",
                                  "message": "no live session with id 'nope'"}
    assert replies["token"]["code"] == "bad_resume_token"
    assert replies["malformed"]["code"] == "bad_message" and "resume_token" in replies["malformed"]["message"]
    assert replies["ended"]["type"] == "resumed"
    assert replies["expired_eof"]["code"] == "resume_expired"
    assert "ended (eof)" in replies["expired_eof"]["message"]
    assert replies["expired_drop"]["code"] == "resume_expired"
    assert "did not come back within the resume window of 5 s" in replies["expired_drop"]["message"]
    assert resume_daemon.alive


def test_grpc_stream_resumes_after_a_cancelled_call(resume_daemon, chunks):
    expected = asyncio.run(uninterrupted(resume_daemon.url, chunks))
    cancelled, acks = threading.Event(), queue.Queue()

    def first_requests(client):
        yield pb.StreamingRecognizeRequest(config=client.config(encoding="f32le"))
        for chunk in chunks[:len(chunks) // 2]:
            yield pb.StreamingRecognizeRequest(audio=chunk)
        cancelled.wait(30)

    def resume_requests(resume):
        yield pb.StreamingRecognizeRequest(resume=resume)
        ack, sent = acks.get(timeout=30), 0
        for chunk in chunks:  # everything after what the server says it has
            if sent >= ack:
                yield pb.StreamingRecognizeRequest(audio=chunk)
            sent += len(chunk)
        yield pb.StreamingRecognizeRequest(eof=True)

    with GrpcClient(resume_daemon.grpc) as client:
        call, first = client.stub.StreamingRecognize(first_requests(client)), []
        for message in call:
            first.append(event_from_proto(message))
            if first[-1]["type"] == "final":
                break
        call.cancel()
        cancelled.set()
        session = first[0]
        resume = pb.ResumeRequest(session_id=session["session_id"], resume_token=session["resume_token"],
                                  last_seq=max(e.get("seq", 0) for e in first))
        second = []
        for message in client.stub.StreamingRecognize(resume_requests(resume)):
            second.append(event_from_proto(message))
            if second[-1]["type"] == "resumed":
                acks.put(second[-1]["ack"])
    assert second[0]["type"] == "resumed" and second[0]["ack"] > 0
    assert finals_of(first + second) == finals_of(expected)
    assert second[-1]["type"] == "end" and second[-1]["reason"] == "eof"


def test_grpc_client_resumes_after_cut_connections(resume_daemon, chunks):
    expected = asyncio.run(uninterrupted(resume_daemon.url, chunks))
    proxy = ProxyThread(resume_daemon.grpc_port)

    def slowly():
        for index, chunk in enumerate(chunks):
            if index in (10, 30, 45):
                time.sleep(0.3)  # let acks and finals arrive, then cut
                assert proxy.cut_all() >= 1
            yield chunk

    try:
        with GrpcClient(proxy.address) as client:
            events = [event_from_proto(m) for m in client.resuming_recognize(slowly(), encoding="f32le")]
    finally:
        proxy.close()
    assert sum(e["type"] == "resumed" for e in events) == 3
    assert finals_of(events) == finals_of(expected)
    assert [e["type"] for e in events if e["type"] in ("session", "end")] == ["session", "end"]


def test_subscriber_that_never_reads_does_not_disturb_the_speaker(resume_daemon):
    chunks = clip_chunks(noise_clip(20.0, seed=2))
    expected = asyncio.run(uninterrupted(resume_daemon.url, chunks))

    async def scenario():
        stalled = []
        events = []
        async for event in stream_audio(resume_daemon.url, chunks, encoding="f32le"):
            if event["type"] == "session":
                for _ in range(3):  # read nothing: its queue and socket buffers fill up
                    ws = await connect(f"{resume_daemon.url}/v1/subscribe/{event['session_id']}", max_queue=1,
                                       additional_headers={"X-Read-Token": event["read_token"]})
                    stalled.append(ws)
            events.append(event)
        for ws in stalled:
            ws.transport.abort()
        return events

    events = asyncio.run(scenario())
    assert finals_of(events) == finals_of(expected)
    assert resume_daemon.alive


def test_sigterm_drains_fifty_sessions_on_both_transports(tiny_models, tmp_path):
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path))
    chunks = clip_chunks(noise_clip(1.0, seed=3))
    stopped = threading.Event()  # gRPC request streams stay open (no eof) until the daemon is gone

    async def websocket_session(ready, started):
        async with connect(server.url + "/v1/recognize") as ws:
            await ws.send(json.dumps(CONFIG))
            events = [json.loads(await ws.recv())]
            started.append(events[0])
            for chunk in chunks:
                await ws.send(chunk)
            await recv_until(ws, lambda e: e["type"] == "ack", events)
            ready()
            await recv_until(ws, lambda e: e["type"] == "end", events)
        return events

    def grpc_requests(client):
        yield pb.StreamingRecognizeRequest(config=client.config(encoding="f32le"))
        for chunk in chunks:
            yield pb.StreamingRecognizeRequest(audio=chunk)
        stopped.wait(120)

    def grpc_session(ready):
        with GrpcClient(server.grpc) as client:
            events = []
            for message in client.stub.StreamingRecognize(grpc_requests(client)):
                events.append(event_from_proto(message))
                if [e["type"] for e in events].count("ack") == 1 and events[-1]["type"] == "ack":
                    ready()
            return events

    async def scenario():
        loop = asyncio.get_running_loop()
        ready = asyncio.Semaphore(0)
        release = lambda: loop.call_soon_threadsafe(ready.release)  # from any thread
        started = []
        sessions = [asyncio.create_task(websocket_session(release, started)) for _ in range(35)]
        sessions += [loop.run_in_executor(None, grpc_session, release) for _ in range(15)]
        for _ in range(50):  # every session has had audio taken
            await asyncio.wait_for(ready.acquire(), 120)
        listener = asyncio.create_task(collect_subscription(server.url, started[0]))
        await asyncio.sleep(0.2)
        code = await loop.run_in_executor(None, server.stop)
        stopped.set()
        return code, await asyncio.gather(*sessions), await listener

    with ThreadPoolExecutor(20) as pool:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(pool)
        try:
            code, results, heard = loop.run_until_complete(scenario())
        finally:
            stopped.set()
            loop.close()
    assert code == 0, server.log
    assert len(results) == 50
    for events in results:
        kinds = [e["type"] for e in events if e["type"] != "ack"]
        assert kinds[0] == "session" and events[-1]["type"] == "end" and events[-1]["reason"] == "shutdown"
        # a session may have no partial: the lexicon search shows a word only once its path spells one
        assert "final" in kinds and kinds.index("final") > max((i for i, k in enumerate(kinds) if k == "partial"),
                                                               default=-1)
    assert heard[-1]["type"] == "end" and heard[-1]["reason"] == "shutdown"
    assert "stopping: finishing 50 open sessions" in server.log and "stopped" in server.log


def test_drain_that_runs_out_of_time_exits_non_zero(tiny_models, tmp_path):
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path, "[server]\ndrain_timeout_s = 0.001\n"))
    chunks = clip_chunks(noise_clip(1.0, seed=4))

    async def scenario():
        held = []
        for _ in range(10):
            ws = await connect(server.url + "/v1/recognize")
            await ws.send(json.dumps(CONFIG))
            for chunk in chunks:
                await ws.send(chunk)
            await recv_until(ws, lambda e: e["type"] == "ack", [])
            held.append(ws)
        return held

    held = asyncio.run(scenario())
    assert server.stop() == 1
    assert "drain timed out after 0.0 s" in server.log
    del held


def test_reconnection_backs_off_and_gives_up_in_time():
    """Both resuming clients (WebSocket and gRPC) retry on this schedule."""
    lost = ConnectionError("cut")
    backoff = Backoff(0.5)
    assert [backoff.next_delay(lost) for _ in range(3)] == [0.1, 0.2, 0.4]
    with pytest.raises(ConnectionError):
        backoff.next_delay(lost)  # 0.8 s more would pass the 0.5 s allowed
    backoff.reset()
    assert backoff.next_delay(lost) == 0.1
