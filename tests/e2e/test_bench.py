"""`streamrnn bench` end to end: real daemons (batched and not), real speech, a few streams."""
import json
import os
import subprocess
import sys
import time

from support import speech_sample

from streamrnn.serve import procstats
from streamrnn.tools.bench import DaemonProbe


def test_bench_reports_latency_rtf_capacity_and_peer(tmp_path):
    files = [str(speech_sample("speechocean762", i)[0]) for i in range(3)]
    plot = tmp_path / "latency.png"
    run = subprocess.run([sys.executable, "-m", "streamrnn", "bench", *files, "--streams", "1,2",
                          "--seconds", "3", "--json", "--plot", str(plot)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert {"capacity_streams", "p95_partial_latency_ms", "rtf", "levels", "unbatched", "idle",
            "pocketsphinx"} <= set(result)
    assert [(lv["mode"], lv["streams"]) for lv in result["levels"]] == [
        ("batched", 1), ("batched", 2), ("unbatched", 1), ("unbatched", 2)]
    for level in result["levels"]:
        assert level["errors"] == 0
        assert 2.0 * level["streams"] <= level["audio_s"] <= 3.5 * level["streams"]
        assert 0 < level["p50_partial_ms"] <= level["p95_partial_ms"] <= level["p99_partial_ms"]
        assert level["p95_final_ms"] > 0 and level["rtf"] > 0 and level["mean_batch"] >= 1
    assert result["capacity_streams"] in (0, 1, 2)
    assert result["rtf"] == result["levels"][1]["rtf"]
    assert result["idle"]["sessions"] == 2 and result["idle"]["cpu_percent"] >= 0
    assert result["pocketsphinx"]["rtf"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_refuses_bad_stream_counts():
    run = subprocess.run([sys.executable, "-m", "streamrnn", "bench", "--streams", "0,4"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--streams" in run.stderr


def test_the_daemon_probe_counts_child_processes():
    """Engine worker processes are the daemon's children: their CPU and memory are the daemon's."""
    child = subprocess.Popen([sys.executable, "-c", "sum(range(30_000_000)); input()"], stdin=subprocess.PIPE)
    try:
        probe = DaemonProbe("", os.getpid())
        assert child.pid in procstats.process_tree(os.getpid())
        deadline = time.monotonic() + 60
        while DaemonProbe("", child.pid).cpu_seconds() < 0.2 and time.monotonic() < deadline:
            time.sleep(0.1)
        own = DaemonProbe("", child.pid)
        assert probe.rss_mb() > own.rss_mb() > 0
        alone = time.process_time()
        assert probe.cpu_seconds() >= alone + own.cpu_seconds() - 0.1
    finally:
        child.kill()
        child.wait()


def test_bench_over_grpc(tmp_path):
    files = [str(speech_sample("speechocean762", i)[0]) for i in range(2)]
    run = subprocess.run([sys.executable, "-m", "streamrnn", "bench", *files, "--transport", "grpc",
                          "--streams", "2", "--seconds", "3", "--no-compare", "--no-peer", "--no-idle", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["transport"] == "grpc"
    [level] = result["levels"]
    assert level["errors"] == 0 and 5.0 <= level["audio_s"] <= 7.0
    assert 0 < level["p50_partial_ms"] <= level["p95_partial_ms"] and level["p95_final_ms"] > 0


def test_bench_grpc_at_a_url_needs_the_grpc_address():
    run = subprocess.run([sys.executable, "-m", "streamrnn", "bench", "--url", "ws://127.0.0.1:9",
                          "--transport", "grpc"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--grpc HOST:PORT" in run.stderr
