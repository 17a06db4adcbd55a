"""The `streamrnn-client` command against a real daemon: a file at a rate the daemon does not
take, and a URL that is the daemon's gRPC port rather than its WebSocket one."""
import json
import subprocess
import sys

import numpy as np
import soundfile


def client_command(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrnn_client.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_stream_command_sends_an_unsupported_rate_at_16k(strict_daemon, tmp_path):
    audio = tmp_path / "noise-12k.wav"
    soundfile.write(audio, np.random.default_rng(0).uniform(-0.1, 0.1, 12000).astype(np.float32), 12000)
    result = client_command("stream", audio, "--url", strict_daemon.url, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "session" and events[-1]["type"] == "end" and events[-1]["reason"] == "eof"
    assert not any(e["type"] == "error" for e in events)


def test_the_grpc_port_is_named_as_not_a_websocket_server(strict_daemon, tmp_path):
    audio = tmp_path / "silence.wav"
    soundfile.write(audio, np.zeros(1600, np.float32), 16000)
    url = f"ws://127.0.0.1:{strict_daemon.grpc_port}"
    result = client_command("stream", audio, "--url", url)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"streamrnn-client: {url} is not a streamrnn WebSocket server")
