"""Vosk server's WebSocket protocol on /vosk of a real daemon on loopback, spoken to by a client
written from Vosk's protocol description (vosk-server's websocket/test.py: a config message, 0.2 s
of 16-bit PCM a message with one answer read after each, then {"eof" : 1} and the last result)."""
import asyncio
import json

import numpy as np
import pytest
from daemon import metric, websocket_text
from support import speech_sample
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from streamrnn_client.audio import encode_chunks, load_for_streaming


def pcm_chunks(path, chunk_ms):
    samples, rate = load_for_streaming(path)
    return encode_chunks(samples, rate, chunk_ms, "pcm_s16le"), rate


async def vosk_client(url: str, chunks: list[bytes], config: dict | None) -> list[dict]:
    """Vosk's test client: every answer it reads, in order."""
    answers = []
    async with connect(url + "/vosk") as ws:
        if config is not None:
            await ws.send(json.dumps({"config": config}))
        for chunk in chunks:
            await ws.send(chunk)
            answers.append(json.loads(await ws.recv()))
        await ws.send('{"eof" : 1}')
        answers.append(json.loads(await ws.recv()))
    return answers


def test_vosk_client_gets_partials_and_results_with_the_websocket_text(daemon):
    chunks, rate = pcm_chunks(speech_sample(index=2)[0], 200)
    before = metric(daemon, 'streamrnn_sessions_total{transport="vosk"}')
    answers = asyncio.run(vosk_client(daemon.url, chunks, {"sample_rate": rate}))
    assert len(answers) == len(chunks) + 1  # one answer per audio message, and the last result
    results = [a for a in answers if "text" in a]
    assert any(a.get("partial") for a in answers) and results[-1] is answers[-1]
    assert all(set(a) == {"partial"} or set(a) <= {"text", "result"} for a in answers)
    text = " ".join(a["text"] for a in results if a["text"])
    assert text and text == websocket_text(daemon, pcm_chunks(speech_sample(index=2)[0], 100)[0], sample_rate=rate)
    words = [w for a in results for w in a.get("result", [])]
    assert " ".join(w["word"] for w in words) == text
    assert all(set(w) == {"word", "start", "end", "conf"} and 0 <= w["start"] <= w["end"] for w in words)
    assert metric(daemon, 'streamrnn_sessions_total{transport="vosk"}') == before + 1


def test_words_false_leaves_out_word_times(daemon):
    chunks, rate = pcm_chunks(speech_sample(index=2)[0], 200)
    answers = asyncio.run(vosk_client(daemon.url, chunks, {"sample_rate": rate, "words": False}))
    assert any(a.get("text") for a in answers) and not any("result" in a for a in answers)


def noise_pcm(seconds=1.0, chunk=3200):
    samples = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 3000).astype("<i2")
    return [samples[i:i + chunk // 2].tobytes() for i in range(0, len(samples), chunk // 2)]


async def refused(url, messages) -> tuple[list[dict], int, str]:
    """Send messages, read answers until the server closes: the answers and the close code and reason."""
    answers = []
    async with connect(url + "/vosk") as ws:
        for message in messages:
            await ws.send(message)
        try:
            while True:
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        except ConnectionClosedError as err:
            return answers, err.rcvd.code, err.rcvd.reason
    raise AssertionError(f"the server did not close: {answers}")


@pytest.mark.parametrize("messages, words", [
    ([json.dumps({"config": {"sample_rate": 12345}})], "bad_config: unsupported sample rate 12345"),
    ([json.dumps({"config": {"sample_rate": 16000, "volume": 11}})], "bad_config: unknown config fields: volume"),
    (["{not json"], "bad_message: message is not valid JSON"),
    ([json.dumps({"config": {"sample_rate": 16000}}), noise_pcm()[0], '{"reset" : 1}'], 'bad_message: expected'),
    ([json.dumps({"config": {"sample_rate": 16000}}), noise_pcm()[0], b"\x00\x01\x02"], "bad_audio: "),
])
def test_bad_messages_close_with_a_reason_and_disturb_nobody(daemon, messages, words):
    async def scenario():
        other = asyncio.create_task(vosk_client(daemon.url, noise_pcm(2.0), {"sample_rate": 16000}))
        answers, code, reason = await refused(daemon.url, messages)
        return answers, code, reason, await other
    answers, code, reason, others = asyncio.run(scenario())
    assert code == 1008 and reason.startswith(words), reason
    audio_messages = sum(isinstance(m, bytes) for m in messages[:-1])
    if audio_messages:  # mid-stream: each audio message answered, then the last result
        assert len(answers) == audio_messages + 1 and "text" in answers[-1]
    assert len(others) == len(noise_pcm(2.0)) + 1 and "text" in others[-1]
    assert daemon.alive
