"""OpenAI's transcription API on a real daemon on loopback, spoken to by the real `openai` package:
its text equals the WebSocket final text of the same file; bad requests get OpenAI's error JSON
with their HTTP status, and a session running meanwhile is untouched."""
import asyncio
import io
import json
import urllib.error
import urllib.request
import uuid

import numpy as np
import openai
import pytest
import soundfile
from daemon import Daemon, metric, websocket_text
from support import speech_sample, tiny_daemon_config

from streamrnn.serve.auth import key_hash
from streamrnn_client.audio import encode_chunks, load_for_streaming
from streamrnn_client.websocket import stream_audio

KEY = "key-of-the-openai-test-daemon"
UPLOAD_LIMIT = 200_000


def client(daemon, key="unused"):
    return openai.OpenAI(base_url=daemon.http + "/v1", api_key=key, max_retries=0)


def file_text_over_websocket(daemon, path) -> str:
    """The final text of `path` streamed over WebSocket in 100 ms chunks of f32le."""
    samples, rate = load_for_streaming(path)
    return websocket_text(daemon, encode_chunks(samples, rate, 100, "f32le"), sample_rate=rate, encoding="f32le")


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    samples = (np.random.default_rng(0).standard_normal(int(rate * seconds)) * 0.1).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def post_form(daemon, fields: dict, files: dict, key: str | None = KEY) -> tuple[int, dict]:
    """A multipart/form-data POST written out by hand (the openai package never leaves out `file`)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
              f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n"
              for name, (filename, data) in files.items()]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(daemon.http + "/v1/audio/transcriptions", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def locked(tiny_models, tmp_path_factory):
    """A daemon with tiny models, an API key, a 200 kB upload limit and 5 s of audio per session."""
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("openai"),
                                       f'[auth]\napi_key_sha256 = ["{key_hash(KEY)}"]\n'
                                       f"[limits]\nmax_upload_bytes = {UPLOAD_LIMIT}\nmax_session_audio_s = 5.0\n"))
    yield server
    server.stop()


def test_openai_client_text_equals_the_websocket_final_text(daemon):
    path, _ = speech_sample(index=2)
    before = metric(daemon, 'streamrnn_sessions_total{transport="openai"}')
    with open(path, "rb") as audio:
        text = client(daemon).audio.transcriptions.create(model="whisper-1", file=audio).text
    assert text and text == file_text_over_websocket(daemon, path)
    assert metric(daemon, 'streamrnn_sessions_total{transport="openai"}') == before + 1
    with open(path, "rb") as audio:
        plain = client(daemon).audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert plain == text + "\n"
    assert [m.id for m in client(daemon).models.list()] == ["streamrnn"]


def test_verbose_json_has_segments_and_word_times(daemon):
    path, _ = speech_sample(index=2)
    with open(path, "rb") as audio:
        result = client(daemon).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert result.duration == pytest.approx(soundfile.info(str(path)).duration, abs=0.01)
    assert " ".join(s.text for s in result.segments) == result.text
    assert " ".join(w.word for w in result.words) == result.text
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= result.duration for w in result.words)
    assert all(s.start <= s.end for s in result.segments)


@pytest.mark.parametrize("response_format, first_line", [("srt", "1"), ("vtt", "WEBVTT")])
def test_subtitles(daemon, response_format, first_line):
    path, _ = speech_sample(index=2)
    with open(path, "rb") as audio:
        subtitles = client(daemon).audio.transcriptions.create(model="whisper-1", file=audio,
                                                               response_format=response_format)
    lines = subtitles.splitlines()
    assert lines[0] == first_line and any(" --> " in line for line in lines)


def test_stream_sends_partials_then_deltas_that_add_up_to_the_text(daemon):
    path, _ = speech_sample(index=2)
    with open(path, "rb") as audio:
        events = list(client(daemon).audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    kinds = [e.type for e in events]
    assert "transcript.text.partial" in kinds and kinds[-1] == "transcript.text.done"
    assert kinds.index("transcript.text.partial") < kinds.index("transcript.text.delta")
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text == file_text_over_websocket(daemon, path)


def test_the_key_is_honoured_as_bearer(locked):
    upload = ("noise.wav", wav_bytes(1.0))
    assert client(locked, KEY).audio.transcriptions.create(model="whisper-1", file=upload).text is not None
    with pytest.raises(openai.AuthenticationError) as info:
        client(locked, "wrong-key").audio.transcriptions.create(model="whisper-1", file=upload)
    assert info.value.status_code == 401 and info.value.code == "unauthenticated"
    with pytest.raises(openai.AuthenticationError):
        client(locked, "wrong-key").models.list()
    status, body = post_form(locked, {}, {"file": upload}, key=None)  # the openai package always sends one
    assert status == 401 and "API key" in body["error"]["message"]


@pytest.mark.parametrize("fields, files, status, code, words", [
    ({"model": "whisper-1"}, {}, 400, "bad_request", "no file field"),
    ({}, {"file": ("notes.txt", b"this is not audio")}, 400, "bad_audio", "notes.txt"),
    ({"response_format": "xml"}, {"file": ("a.wav", wav_bytes(0.5))}, 400, "bad_request", "response_format"),
    ({"language": "fr"}, {"file": ("a.wav", wav_bytes(0.5))}, 400, "bad_request", "English"),
    ({"volume": "11"}, {"file": ("a.wav", wav_bytes(0.5))}, 400, "bad_request", "unknown fields: volume"),
    ({}, {"file": ("big.wav", wav_bytes(8.0))}, 413, "too_large", f"limit of {UPLOAD_LIMIT} bytes"),
    ({}, {"file": ("long.flac", b"")}, 413, "too_long", "limit of 5 s"),  # the file is made below
])
def test_bad_requests_get_openai_errors_and_disturb_nobody(locked, fields, files, status, code, words):
    if "file" in files and files["file"][0] == "long.flac":  # 6 s of FLAC: under the upload limit, over 5 s
        out = io.BytesIO()
        soundfile.write(out, np.zeros(6 * 16000, dtype=np.float32), 16000, format="FLAC")
        files = {"file": ("long.flac", out.getvalue())}

    async def scenario():
        samples = (np.random.default_rng(1).standard_normal(16000 * 2) * 0.1).astype("<f4")
        chunks = [samples[i:i + 1600].tobytes() for i in range(0, len(samples), 1600)]
        session = asyncio.create_task(collect(locked, chunks))
        answer = await asyncio.to_thread(post_form, locked, fields, files)
        return answer, await session
    (got_status, body), events = asyncio.run(scenario())
    assert got_status == status and body["error"]["code"] == code and words in body["error"]["message"], body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert events[0]["type"] == "session" and events[-1]["type"] == "end" and events[-1]["reason"] == "eof"
    assert not [e for e in events if e["type"] == "error"]
    assert locked.alive


async def collect(daemon, chunks):
    return [e async for e in stream_audio(daemon.url, chunks, encoding="f32le", api_key=KEY)]


def test_unknown_path_and_wrong_method(locked):
    for method, path, status in (("POST", "/v1/audio/translations", 404), ("GET", "/v1/audio/transcriptions", 405)):
        request = urllib.request.Request(locked.http + path, method=method, headers={"Authorization": f"Bearer {KEY}"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == status and json.loads(info.value.read())["error"]["message"]
