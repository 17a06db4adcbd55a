"""A short `streamrnn chaos` (tiny models, noise clips): redis-server, nginx and two replicas on
loopback, clients streaming through nginx (four over WebSocket, two over gRPC) while a replica is SIGKILLed every few seconds; no
final lost, repeated or out of order, no failed session."""
import json
import subprocess
import sys

import soundfile
from support import needs_program, tiny_daemon_config

from streamrnn.tools.soak import noise_clip


def test_short_chaos_loses_and_repeats_no_final(tiny_models, tmp_path):
    for program in ("redis-server", "nginx"):
        needs_program(program)
    config = tiny_daemon_config(tiny_models, tmp_path, "[endpoint]\nmax_utterance_s = 1.0\n")
    clips = []
    for index in range(3):
        clips.append(tmp_path / f"clip{index}.wav")
        soundfile.write(clips[-1], noise_clip(4.0 + index, seed=index), 16000)
    result = subprocess.run([sys.executable, "-m", "streamrnn", "--config", str(config), "chaos", "--replicas", "2",
                             "--clients", "6", "--grpc-clients", "2", "--seconds", "24", "--kill-every", "6", "--audio", *map(str, clips),
                             "--json"], check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["grpc_clients"] == 2
    assert report["kills"] >= 2 and report["takeovers"] >= 1 and report["sessions"] >= 6, report
    assert report["expected_finals"] > report["sessions"]  # several finals a session, so kills fall between
    assert report["lost_finals"] == 0 and report["duplicated_finals"] == 0 and report["out_of_order"] == 0
    assert report["failed_sessions"] == 0
