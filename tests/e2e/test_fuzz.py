"""Random input against a running daemon (tiny models): WebSocket messages of random shapes,
random gRPC requests, odd audio payloads. The daemon never dies, every reply is a
well-formed event or a named error, and a clean session streaming alongside gets
exactly the transcript it gets alone."""
import asyncio
import json
import threading
from collections import Counter
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
from daemon import Daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import tiny_daemon_config
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamrnn.tools.soak import clip_chunks, finals_of, noise_clip
from streamrnn_client.audio import paced
from streamrnn_client.grpc_client import GrpcClient
from streamrnn_client.proto import streamrnn_pb2 as pb
from streamrnn_client.websocket import stream_audio

FUZZ = settings(max_examples=500, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ERROR_CODES = {"bad_message", "bad_config", "bad_audio", "config_required", "unknown_session",
               "bad_resume_token", "bad_request"}
# Statuses a bad request may get; UNKNOWN or INTERNAL would be an unhandled server exception.
GRPC_STATUSES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
RATES = [8000, 16000, 44100, 48000]
INPUTS = Counter()  # messages and requests sent, printed at the end (pytest -s) for RELIABILITY.md


@pytest.fixture(scope="module")
def fuzz_daemon(tiny_models, tmp_path_factory):
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("fuzz")))
    yield server
    assert server.stop() == 0
    print(f"\nfuzz inputs sent: {dict(INPUTS)}, {sum(INPUTS.values())} in all")


@pytest.fixture(scope="module")
def clean_audio(fuzz_daemon):
    chunks = clip_chunks(noise_clip(4.0, seed=7))
    alone = asyncio.run(transcript(fuzz_daemon.url, chunks))
    return chunks, alone


async def transcript(url, chunks, seconds_per_chunk=0.0):
    source = paced(chunks, seconds_per_chunk) if seconds_per_chunk else chunks
    return finals_of([e async for e in stream_audio(url, source, encoding="f32le", reconnect_for=0)])


@contextmanager
def clean_session_alongside(daemon, clean_audio):
    """A well-behaved session streams, slowly and over and over, while the block runs."""
    chunks, alone = clean_audio
    done, results = threading.Event(), []

    def run():
        while not done.is_set():
            results.append(asyncio.run(transcript(daemon.url, chunks, 0.02)))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(120)
    assert daemon.alive, daemon.log
    assert results and all(r == alone for r in results)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10)
message_types = st.sampled_from(["config", "eof", "resume", "suggest", "audio", "pause", ""]) | st.text(max_size=8)
config_fields = st.sampled_from(["sample_rate", "encoding", "interim_results", "suggestions", "phrases",
                                 "session_id", "resume_token", "last_seq", "text", "count"])
typed_messages = st.builds(lambda kind, fields: {"type": kind, **fields}, message_types,
                           st.dictionaries(config_fields, json_values, max_size=4))
text_messages = st.one_of(typed_messages.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40))
websocket_messages = st.lists(text_messages | st.binary(max_size=400), min_size=1, max_size=6)


async def exchange(url, path, messages):
    """Send the messages, then eof; read until `end` (/v1/recognize), a reply to each message
    (/v1/suggest) or the server closing the connection."""
    replies, messages = [], messages + [json.dumps({"type": "eof"})]
    async with connect(url + path) as ws:
        try:
            for message in messages:
                await ws.send(message)
                INPUTS["websocket " + ("binary" if isinstance(message, bytes) else "text")] += 1
            while path != "/v1/suggest" or len(replies) < len(messages):
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                if replies[-1]["type"] == "end":
                    break
        except (ConnectionClosed, TimeoutError):
            pass
    return replies


def check_replies(replies):
    for reply in replies:
        assert isinstance(reply.get("type"), str)
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES and reply["message"], reply


def test_random_websocket_messages(fuzz_daemon, clean_audio):
    @FUZZ
    @given(messages=websocket_messages, path=st.sampled_from(["/v1/recognize", "/v1/suggest"]))
    def one(messages, path):
        check_replies(asyncio.run(exchange(fuzz_daemon.url, path, messages)))

    with clean_session_alongside(fuzz_daemon, clean_audio):
        one()


audio_payloads = st.one_of(
    st.binary(max_size=3000),  # odd lengths, random bytes (NaN and inf among f32 patterns)
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=800)
      .map(lambda xs: np.array(xs, dtype="<f4").tobytes()),
    st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, 0.0, 1.0]), max_size=800)
      .map(lambda xs: np.array(xs, dtype="<f4").tobytes()),
    st.lists(st.integers(-32768, 32767), max_size=1600).map(lambda xs: np.array(xs, dtype="<i2").tobytes()),
)


def test_odd_audio_payloads(fuzz_daemon, clean_audio):
    @FUZZ
    @given(encoding=st.sampled_from(["pcm_s16le", "f32le"]), rate=st.sampled_from(RATES),
           payloads=st.lists(audio_payloads, min_size=1, max_size=5))
    def one(encoding, rate, payloads):
        config = json.dumps({"type": "config", "encoding": encoding, "sample_rate": rate})
        replies = asyncio.run(exchange(fuzz_daemon.url, "/v1/recognize", [config] + payloads))
        check_replies(replies)
        assert replies[0]["type"] == "session" and replies[-1]["type"] == "end"
        assert {r["code"] for r in replies if r["type"] == "error"} <= {"bad_audio"}

    with clean_session_alongside(fuzz_daemon, clean_audio):
        one()


configs = st.builds(pb.RecognitionConfig, sample_rate=st.sampled_from(RATES) | st.integers(-2 ** 31, 2 ** 31 - 1),
                    encoding=st.integers(0, 3), interim_results=st.booleans(),
                    suggestions=st.none() | st.integers(-2 ** 31, 2 ** 31 - 1),
                    phrases=st.lists(st.text(max_size=12), max_size=3))
resumes = st.builds(pb.ResumeRequest, session_id=st.text(max_size=32), resume_token=st.text(max_size=32),
                    last_seq=st.integers(0, 2 ** 32 - 1))
requests = st.one_of(st.builds(pb.StreamingRecognizeRequest, config=configs),
                     st.builds(pb.StreamingRecognizeRequest, audio=audio_payloads),
                     st.builds(pb.StreamingRecognizeRequest, eof=st.booleans()),
                     st.builds(pb.StreamingRecognizeRequest, resume=resumes),
                     st.just(pb.StreamingRecognizeRequest()))


def test_random_grpc_requests(fuzz_daemon, clean_audio):
    with GrpcClient(fuzz_daemon.grpc) as client:
        @FUZZ
        @given(stream=st.lists(requests, max_size=6), unary=st.tuples(configs, st.binary(max_size=2000)),
               text=st.text(max_size=60), count=st.integers(-2 ** 31, 2 ** 31 - 1))
        def one(stream, unary, text, count):
            expect_status_or_reply(lambda: list(client.stub.StreamingRecognize(iter(stream), timeout=30)),
                                   len(stream))
            expect_status_or_reply(lambda: client.stub.Recognize(
                pb.RecognizeRequest(config=unary[0], audio=unary[1]), timeout=30))
            expect_status_or_reply(lambda: client.stub.Suggest(pb.SuggestRequest(text=text, count=count),
                                                               timeout=30))
            expect_status_or_reply(lambda: client.stub.Score(pb.ScoreRequest(text=text), timeout=30))
            expect_status_or_reply(lambda: list(client.stub.Subscribe(pb.SubscribeRequest(session_id=text),
                                                                      timeout=30)))

        with clean_session_alongside(fuzz_daemon, clean_audio):
            one()


def expect_status_or_reply(call, requests=1):
    INPUTS["grpc requests"] += requests
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() in GRPC_STATUSES, (err.code(), err.details())
        assert err.details()
