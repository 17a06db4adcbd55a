"""Real speech through a real daemon with the shipped models, over WebSocket and gRPC."""
import asyncio
import json

from support import SPEECH, needs_shared_data, speech_sample

from streamrnn.engine.transcribe import final_text, stream_file
from streamrnn_client.audio import file_chunks, paced
from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.websocket import stream_audio, subscribe


def expected_text(recognizer, path, chunk_ms=100):
    return final_text(stream_file(recognizer, path, chunk_ms, suggestions=0))


def test_websocket_transcript_equals_transcribe(daemon, default_recognizer):
    path, _ = speech_sample(index=2)
    chunks, rate = file_chunks(path, 100, "f32le")
    events = asyncio.run(_collect(daemon.url, chunks, sample_rate=rate, encoding="f32le"))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session" and kinds[-1] == "end"
    assert "partial" in kinds and kinds.index("partial") < kinds.index("final")
    assert final_text(events) == expected_text(default_recognizer, path)
    for final in (e for e in events if e["type"] == "final"):
        assert final["words"] and all(w["start"] < w["end"] for w in final["words"])


def test_grpc_transcript_equals_transcribe(daemon, default_recognizer):
    path, _ = speech_sample(index=2)
    chunks, rate = file_chunks(path, 100, "f32le")
    with GrpcClient(daemon.grpc) as client:
        events = [event_from_proto(m) for m in client.streaming_recognize(chunks, sample_rate=rate,
                                                                          encoding="f32le")]
        unary = client.recognize(b"".join(chunks), sample_rate=rate, encoding="f32le")
    assert final_text(events) == expected_text(default_recognizer, path)
    assert unary.text == final_text(events)


async def _collect(url, chunks, **config):
    return [e async for e in stream_audio(url, chunks, **config)]


def test_subscriber_joining_mid_stream_sees_every_later_event(daemon):
    path, _ = speech_sample(index=4)
    chunks, rate = file_chunks(path, 100)

    async def scenario():
        speaker, listener = [], None
        async for event in stream_audio(daemon.url, paced(chunks, 0.1), sample_rate=rate):
            speaker.append(event)
            if event["type"] == "partial" and listener is None:
                listener = asyncio.create_task(listen(speaker[0]["session_id"], speaker[0]["read_token"]))
        return speaker, await listener

    async def listen(session_id, read_token):
        return [e async for e in subscribe(daemon.url, session_id, read_token)]

    speaker, received = asyncio.run(scenario())
    assert received and received[-1]["type"] == "end"
    assert len(received) < len(speaker) - 1  # it joined mid-stream
    assert speaker[-len(received):] == received  # a suffix: every later event, in order
    assert any(e["type"] == "final" for e in received)


def test_two_dozen_concurrent_sessions_get_their_own_transcripts(daemon, default_recognizer):
    needs_shared_data()
    lines = (SPEECH / "speechocean762.jsonl").read_text().splitlines()[:24]
    paths = [SPEECH / json.loads(line)["audio"] for line in lines]

    async def one(path):
        chunks, rate = file_chunks(path, 100, "f32le")
        return final_text([e async for e in stream_audio(daemon.url, paced(chunks, 0.05), sample_rate=rate,
                                                          encoding="f32le")])

    async def all_sessions():
        return await asyncio.gather(*(one(p) for p in paths))

    got = asyncio.run(all_sessions())
    expected = [expected_text(default_recognizer, p) for p in paths]
    assert got == expected
    assert len(set(expected)) > 12  # different audio, different transcripts
