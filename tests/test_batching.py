"""Cross-session batching: many sessions' chunks run together give each session exactly the
events it gets alone, whatever the chunkings, options and models."""
import asyncio

import numpy as np
import pytest

from streamrnn.audio import read_audio
from streamrnn.batcher import Batcher
from streamrnn.engine import Recognizer, SessionOptions

from conftest import speech_sample, tiny_config

CHUNKINGS = [[1600], [160], [7, 3000, 161, 16000, 1, 999, 4410], [16000], [4800, 320]]
OPTIONS = [{}, {"phrases": ["KUBERNETES", "THE WORLD"]}, {"interim_results": False}, {"suggestions": 2}, {}]


def chunked(samples, sizes):
    out, start, index = [], 0, 0
    while start < len(samples):
        size = sizes[index % len(sizes)]
        out.append(samples[start:start + size].astype("<f4").tobytes())
        start, index = start + size, index + 1
    return out


def open_sessions(recognizer, count):
    return [recognizer.session(SessionOptions(encoding="f32le", **OPTIONS[i % len(OPTIONS)]))
            for i in range(count)]


def alone(recognizer, streams):
    results = []
    for session, chunks in zip(open_sessions(recognizer, len(streams)), streams):
        events = [e for chunk in chunks for e in session.feed(chunk)]
        results.append(events + session.finish())
    return results


def batched(recognizer, streams):
    """Round robin: every round, one batch with the next chunk (or the end) of every open stream."""
    sessions = open_sessions(recognizer, len(streams))
    results, position = [[] for _ in streams], [0] * len(streams)
    while any(p <= len(chunks) for p, chunks in zip(position, streams)):
        open_ones = [i for i, chunks in enumerate(streams) if position[i] <= len(chunks)]
        jobs = [(sessions[i], streams[i][position[i]] if position[i] < len(streams[i]) else None)
                for i in open_ones]
        for i, events in zip(open_ones, recognizer.run(jobs)):
            assert not isinstance(events, Exception), events
            results[i] += events
            position[i] += 1
    return results


def real_speech_streams():
    picks = [("speechocean762", 1), ("fsdd", 2), ("speechocean762", 5), ("librispeech-mini", 3), ("fsdd", 7)]
    streams = []
    for (name, index), sizes in zip(picks, CHUNKINGS):
        samples, rate = read_audio(speech_sample(name, index)[0])
        assert rate == 16000
        streams.append(chunked(samples[: 16000 * 6], sizes))
    return streams


def test_batched_events_equal_unbatched_on_real_speech(default_recognizer):
    streams = real_speech_streams()
    expected = alone(default_recognizer, streams)
    assert batched(default_recognizer, streams) == expected
    assert all(any(e["type"] == "final" for e in events) for events in expected)
    assert any(e["type"] == "suggestions" for e in expected[3])


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_batched_events_equal_unbatched_tiny(tiny_models, rnn):
    recognizer = Recognizer(tiny_config(tiny_models, rnn))
    rng = np.random.default_rng(1)
    streams = [chunked((rng.standard_normal(8000 * (i + 2)) * 0.1).astype(np.float32), sizes)
               for i, sizes in enumerate(CHUNKINGS)]
    assert batched(recognizer, streams) == alone(recognizer, streams)


def test_a_bad_chunk_fails_only_its_own_session(tiny_models):
    recognizer = Recognizer(tiny_config(tiny_models))
    good, bad = open_sessions(recognizer, 2)
    audio = np.zeros(1600, dtype="<f4").tobytes()
    results = recognizer.run([(good, audio), (bad, audio[:-1])])
    assert isinstance(results[1], ValueError) and "multiple of 4" in str(results[1])
    assert isinstance(results[0], list)


def test_batcher_serves_concurrent_sessions_in_order(tiny_models):
    recognizer = Recognizer(tiny_config(tiny_models))
    rng = np.random.default_rng(2)
    streams = [chunked((rng.standard_normal(16000) * 0.1).astype(np.float32), sizes) for sizes in CHUNKINGS]
    expected = alone(recognizer, streams)
    batcher = Batcher(recognizer, max_batch=3, max_wait_ms=2)

    async def stream(session, chunks):
        # all of a session's chunks are queued at once: the batcher must keep their order
        results = await asyncio.gather(*(batcher.submit(session, c) for c in chunks))
        return [e for events in results for e in events] + await batcher.submit(session, None)

    async def everyone():
        sessions = open_sessions(recognizer, len(streams))
        return await asyncio.gather(*(stream(s, c) for s, c in zip(sessions, streams)))

    try:
        assert asyncio.run(everyone()) == expected
    finally:
        batcher.close()
