"""A short `streamrnn soak` against a real daemon (tiny models): 50 clients stream for about
30 s through a proxy that cuts their connections at random; every session is resumed and
its finals equal an uninterrupted run's, none lost, none twice."""
import json
import subprocess
import sys

from daemon import Daemon
from support import tiny_daemon_config


def test_short_soak_loses_and_repeats_no_final(tiny_models, tmp_path):
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path, "[endpoint]\nmax_utterance_s = 1.0\n"))
    try:
        result = subprocess.run([sys.executable, "-m", "streamrnn", "soak", "--url", server.url, "--clients", "50",
                                 "--seconds", "30", "--drop-after", "3", "--pace", "2"],
                                capture_output=True, text=True, timeout=600)
        assert server.alive
    finally:
        code = server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["sessions"] >= 50 and report["failed_sessions"] == 0, report
    assert report["drops"] > 0 and report["resumes"] > 0
    assert report["expected_finals"] > report["sessions"]  # several finals a session, so drops fall between
    assert report["lost_finals"] == 0 and report["duplicated_finals"] == 0 and report["out_of_order"] == 0
    assert report["rss_start_mb"] > 0 and report["rss_end_mb"] > 0
    assert code == 0
