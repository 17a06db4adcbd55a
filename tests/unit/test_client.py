"""The client package (clients/streamrnn_client) on its own: no torch, its numpy resampling, the
resume state both resuming clients share, and one-line errors from its command."""
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from streamrnn_client.audio import encode_chunks, file_chunks, load_for_streaming, read_audio, resample
from streamrnn_client.protocol import AudioError
from streamrnn_client.resume import ResumeState

# Run in a fresh interpreter where importing torch (or the daemon's package) fails loudly.
NO_TORCH = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "streamrnn"):
            raise ImportError(f"the client imported {name}")
sys.meta_path.insert(0, Refuse())
"""


def without_torch(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True, timeout=timeout)


def client_command(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """`streamrnn-client ARGS` (python -m streamrnn_client.cli), with torch out of reach."""
    code = f"sys.argv = ['streamrnn-client', *{list(map(str, args))!r}]\n" \
           "runpy.run_module('streamrnn_client.cli', run_name='__main__', alter_sys=True)\n"
    return without_torch(code, timeout)


def test_the_client_package_loads_no_torch():
    result = without_torch("""
import streamrnn_client
from streamrnn_client import audio, cli, grpc_client, protocol, resume, tls, websocket
for argv in (["stream", "a.wav", "--realtime"], ["mic", "--list-devices"], ["subscribe", "id", "token"]):
    cli.build_parser().parse_args(argv)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "streamrnn")))
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [[], ["stream"], ["mic"], ["subscribe"]])
def test_client_command_help_loads_no_torch(command):
    result = client_command(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: streamrnn-client")


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_a_file_at_a_rate_the_daemon_does_not_take_is_resampled_to_16k(tmp_path):
    rate, seconds = 12000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    path = tmp_path / "tone-12k.wav"
    soundfile.write(path, np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1), rate)  # stereo
    samples, new_rate = load_for_streaming(path)
    assert new_rate == 16000 and len(samples) == int(16000 * seconds)
    assert abs(peak_hz(samples, new_rate) - 440) < 1.0
    middle = samples[1600:-1600]  # away from the zero padding at the ends
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.5 / np.sqrt(2)) < 0.01
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(samples)) / new_rate)
    assert np.abs(middle - expected[1600:-1600]).max() < 0.01


def test_a_file_at_a_supported_rate_keeps_its_rate(tmp_path):
    path = tmp_path / "noise-22k.flac"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 22050).astype(np.float32)
    soundfile.write(path, noise, 22050)
    samples, rate = load_for_streaming(path)
    assert rate == 22050 and len(samples) == 22050
    chunks, chunk_rate = file_chunks(path, chunk_ms=100, encoding="f32le")
    assert chunk_rate == 22050 and len(chunks) == 10 and len(chunks[0]) == 2205 * 4


@pytest.mark.parametrize("rate, new_rate", [(12000, 16000), (96000, 16000), (37800, 16000), (16000, 12000)])
def test_numpy_resampling_matches_torchaudios(rate, new_rate):
    """The numpy resampler (the client's and the daemon's) is torchaudio's windowed sinc, sample for sample."""
    import torch
    import torchaudio
    noise = (np.random.default_rng(rate).standard_normal(rate // 2 + 7) * 0.1).astype(np.float32)
    ours = resample(noise, rate, new_rate)
    theirs = torchaudio.functional.resample(torch.from_numpy(noise), rate, new_rate).numpy()
    assert ours.dtype == np.float32 and len(ours) == len(theirs)
    assert np.abs(ours - theirs).max() < 1e-3


def test_resampling_between_rates_with_no_common_step():
    """44099 and 16000 share no divisor: each output sample gets its own taps (no polyphase table)."""
    t = np.arange(44099) / 44099
    samples = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 44099, 16000)
    assert len(samples) == 16000 and abs(peak_hz(samples, 16000) - 1000) < 1.0
    assert np.abs(samples[800:-800] - np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)[800:-800]).max() < 0.01


def test_encode_chunks_names_an_unknown_encoding():
    with pytest.raises(AudioError, match="unsupported encoding 'opus'"):
        encode_chunks(np.zeros(1600, np.float32), 16000, 100, "opus")


@pytest.mark.parametrize("make, message", [
    (lambda folder: folder / "missing.wav", "no such file"),
    (lambda folder: folder, "it is a folder"),
    (lambda folder: (folder / "text.wav").write_text("not audio") and folder / "text.wav", "not a wav, flac"),
])
def test_unreadable_audio_files_are_named_in_one_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(AudioError) as caught:
        read_audio(path)
    assert str(caught.value).startswith(f"cannot read audio file {path}: {message}")
    assert "\n" not in str(caught.value) and "System error" not in str(caught.value)


def test_resume_state_passes_each_event_once_and_sends_from_the_ack():
    state = ResumeState(reconnect_for=5)
    for chunk in (b"aaaa", b"bbbb", b"cc"):
        state.buffer.add(chunk)
    assert state.session_started("s1", "token") == 0 and state.has_session
    assert [state.is_new(seq) for seq in (1, 2, None, 2, 1, 3)] == [True, True, True, False, False, True]
    assert state.resume_request() == {"session_id": "s1", "resume_token": "token", "last_seq": 3}
    assert state.resumed(6) == 6 and state.resumes == 1
    assert state.pending(6) == b"bb" and state.pending(10) == b""
    state.source_done = True
    assert state.pending(10) is None
    with pytest.raises(ValueError, match="already forgotten"):
        state.pending(0)
    with pytest.raises(ConnectionError):
        state.retry_delay(ConnectionError("cut"), retryable=False)
    assert 0 < state.retry_delay(ConnectionError("cut"), retryable=True) <= 2


@pytest.fixture
def closing_server():
    """A TCP port that hangs up on every connection without a word, as a gRPC port does to a
    WebSocket handshake."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.close()
    threading.Thread(target=serve, daemon=True).start()
    yield f"ws://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "noise.wav"
    soundfile.write(path, np.zeros(1600, np.float32), 16000)
    return path


def test_stream_command_errors_are_one_line(tmp_path, closing_server, wav):
    missing = one_line_error(client_command("stream", tmp_path / "nothing.wav"))
    assert missing.startswith("streamrnn-client: error: cannot read audio file") and "no such file" in missing
    not_websocket = one_line_error(client_command("stream", wav, "--url", closing_server, timeout=30))
    assert f"{closing_server} is not a streamrnn WebSocket server" in not_websocket
    free_port = socket.create_server(("127.0.0.1", 0))
    port = free_port.getsockname()[1]
    free_port.close()
    refused = one_line_error(client_command("stream", wav, "--url", f"ws://127.0.0.1:{port}", timeout=30))
    assert refused.startswith(f"streamrnn-client: cannot reach ws://127.0.0.1:{port}")
    no_ca = one_line_error(client_command("stream", wav, "--url", "wss://127.0.0.1:1", "--ca", tmp_path / "ca.pem"))
    assert "no such CA file" in no_ca
    subscriber = one_line_error(client_command("subscribe", "id", "token", "--url", closing_server, timeout=30))
    assert "is not a streamrnn WebSocket server" in subscriber


def test_streamrnn_stream_goes_through_the_client(tmp_path):
    result = subprocess.run([sys.executable, "-m", "streamrnn", "stream", str(tmp_path / "nothing.wav")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("streamrnn: error: cannot read audio file") and "no such file" in result.stderr
