"""`streamrnn bench`: many concurrent real-time streams against a real daemon.

Each client streams real speech over WebSocket (or gRPC: --transport grpc) on
loopback at real-time pace.
A partial's latency is the time from sending the chunk that completes the
audio it covers (its `end`) to receiving it; finalisation latency is the time
from eof to the last final (or `end`). Levels of N streams run with batching
on and, for comparison, off (`serve --max-batch 1`); pocketsphinx decodes the
same audio as a single-stream peer.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from streamrnn.audio import load_16k
from streamrnn.manifest import load_manifest
from streamrnn.serve import eventloop, procstats
from streamrnn_client.audio import encode_chunks
from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.websocket import stream_audio

LATENCY_TARGET_MS = 200.0
SAMPLE_RATE = 16000


@dataclass
class StreamRecord:
    sent: list[tuple[float, float]] = field(default_factory=list)  # (audio seconds so far, send time)
    partial_ms: list[float] = field(default_factory=list)
    final_ms: float | None = None
    eof_at: float | None = None
    error: str | None = None


@dataclass
class Level:
    mode: str
    streams: int
    audio_s: float
    p50_partial_ms: float | None
    p95_partial_ms: float | None
    p99_partial_ms: float | None
    p50_final_ms: float | None
    p95_final_ms: float | None
    rtf: float | None  # engine seconds per audio second, all streams together
    cpu_s_per_audio_s: float | None  # the daemon process's CPU seconds per audio second it got
    rss_mb_per_stream: float | None
    mean_batch: float | None
    errors: int


def speech_clips(paths: list[str], manifest: str | None, split: str, limit: int = 40) -> list[np.ndarray]:
    """16 kHz float clips from files and/or a manifest."""
    paths = list(paths) + ([str(u.audio) for u in load_manifest(manifest, split)[:limit]] if manifest else [])
    if not paths:
        raise ValueError("no audio: give audio files or --manifest")
    clips = []
    for path in paths:
        clips.append(load_16k(path).astype(np.float32))
    return clips


def stream_audio_for(clips: list[np.ndarray], index: int, seconds: float) -> np.ndarray:
    """Stream `index`'s audio: the clips one after another from clip `index` on, `seconds` long,
    so concurrent streams say different things."""
    needed, parts, k = int(seconds * SAMPLE_RATE), [], index
    while sum(map(len, parts)) < needed:
        parts.append(clips[k % len(clips)])
        k += 1
    return np.concatenate(parts)[:needed]


def pcm_chunks(samples: np.ndarray, chunk_ms: int) -> list[bytes]:
    return encode_chunks(samples, SAMPLE_RATE, chunk_ms, "pcm_s16le")


async def websocket_events(target: "Target", chunks: AsyncIterator[bytes]) -> AsyncIterator[dict]:
    async for event in stream_audio(target.url, chunks, raise_errors=False, suggestions=0):
        yield event


async def grpc_events(target: "Target", chunks: AsyncIterator[bytes]) -> AsyncIterator[dict]:
    """One StreamingRecognize call (grpc.aio), its messages as the WebSocket API's event dicts."""
    import grpc

    from streamrnn_client.proto import streamrnn_pb2 as pb
    from streamrnn_client.proto import streamrnn_pb2_grpc as pb_grpc

    async def requests():
        yield pb.StreamingRecognizeRequest(config=GrpcClient.config(SAMPLE_RATE, "pcm_s16le", suggestions=0))
        async for chunk in chunks:
            yield pb.StreamingRecognizeRequest(audio=chunk)
        yield pb.StreamingRecognizeRequest(eof=True)

    async with grpc.aio.insecure_channel(target.grpc) as channel:
        async for message in pb_grpc.RecognizerStub(channel).StreamingRecognize(requests()):
            yield event_from_proto(message)


TRANSPORTS = {"websocket": websocket_events, "grpc": grpc_events}


@dataclass
class Target:
    """Where the streams go: the daemon's WebSocket URL and gRPC address, and the transport."""
    url: str
    grpc: str | None
    transport: str = "websocket"


async def one_stream(target: Target, chunks: list[bytes], chunk_s: float, start_at: float,
                     record: StreamRecord, timeout: float) -> None:
    loop = asyncio.get_running_loop()

    async def paced():
        audio_s = 0.0
        for index, chunk in enumerate(chunks):
            delay = start_at + index * chunk_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            audio_s += len(chunk) / (2 * SAMPLE_RATE)
            record.sent.append((audio_s, time.monotonic()))
            yield chunk
        record.eof_at = time.monotonic()

    async def receive():
        async for event in TRANSPORTS[target.transport](target, paced()):
            now = time.monotonic()  # (uvloop's loop.time() is cached per loop iteration, in whole ms)
            if event["type"] == "partial":
                record.partial_ms.append(1000 * (now - sent_time(record.sent, event["end"])))
            elif event["type"] in ("final", "end") and record.eof_at is not None:
                record.final_ms = 1000 * (now - record.eof_at)
            elif event["type"] == "error":
                record.error = event["code"]

    try:
        await asyncio.wait_for(receive(), timeout)
    except Exception as err:  # a stream that fails (timeout, connection) is counted, not fatal
        record.error = record.error or type(err).__name__


def sent_time(sent: list[tuple[float, float]], end: float) -> float:
    """When the chunk that completed the audio up to `end` was sent."""
    for audio_s, at in sent:
        if audio_s >= end - 1e-6:
            return at
    return sent[-1][1]


class DaemonProbe:
    """CPU seconds and resident memory of a local daemon process and its engine worker processes
    (Linux /proc), and its metrics."""

    def __init__(self, http: str, pid: int | None):
        self.http, self.pid = http, pid

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else procstats.tree_cpu_seconds(self.pid)

    def rss_mb(self) -> float | None:
        return None if self.pid is None else procstats.tree_resident_bytes(self.pid) / 2**20

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(self.http + "/metrics", timeout=10).read().decode()
        wanted = ("streamrnn_compute_seconds_total", "streamrnn_audio_seconds_total",
                  "streamrnn_batch_size_sum", "streamrnn_batch_size_count")
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                values[name] = float(value)
        return values


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def run_level(target: Target, probe: DaemonProbe, clips, streams: int, seconds: float, chunk_ms: int,
                    mode: str) -> Level:
    loop = asyncio.get_running_loop()
    records = [StreamRecord() for _ in range(streams)]
    rng = random.Random(streams)
    before_metrics, before_cpu, base_rss = probe.metrics(), probe.cpu_seconds(), probe.rss_mb()
    start = loop.time() + 0.5
    chunk_s, peak_rss = chunk_ms / 1000, [base_rss]
    sampler = asyncio.create_task(sample_rss(probe, peak_rss))
    await asyncio.gather(*(
        one_stream(target, pcm_chunks(stream_audio_for(clips, i, seconds), chunk_ms), chunk_s,
                   start + rng.uniform(0, chunk_s), records[i], timeout=3 * seconds + 30)
        for i in range(streams)))
    sampler.cancel()
    after_metrics, after_cpu = probe.metrics(), probe.cpu_seconds()
    return summarise(mode, streams, records, before_metrics, after_metrics, before_cpu, after_cpu,
                     base_rss, max(r for r in peak_rss if r is not None) if base_rss else None)


async def sample_rss(probe: DaemonProbe, peak: list) -> None:
    while True:
        peak.append(probe.rss_mb())
        await asyncio.sleep(0.5)


def summarise(mode, streams, records, before, after, cpu0, cpu1, rss0, rss1) -> Level:
    partials = [ms for r in records for ms in r.partial_ms]
    finals = [r.final_ms for r in records if r.final_ms is not None]
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    audio = delta.get("streamrnn_audio_seconds_total", 0.0)
    batches = delta.get("streamrnn_batch_size_count", 0.0)
    return Level(
        mode=mode, streams=streams, audio_s=round(audio, 1),
        p50_partial_ms=percentile(partials, 50), p95_partial_ms=percentile(partials, 95),
        p99_partial_ms=percentile(partials, 99), p50_final_ms=percentile(finals, 50),
        p95_final_ms=percentile(finals, 95),
        rtf=round(delta["streamrnn_compute_seconds_total"] / audio, 4) if audio else None,
        cpu_s_per_audio_s=round((cpu1 - cpu0) / audio, 4) if cpu0 is not None and audio else None,
        rss_mb_per_stream=round((rss1 - rss0) / streams, 3) if rss0 is not None else None,
        mean_batch=round(delta["streamrnn_batch_size_sum"] / batches, 1) if batches else None,
        errors=sum(r.error is not None for r in records))


async def idle_cost(url: str, probe: DaemonProbe, sessions: int, hold_s: float) -> dict:
    """Open sessions that send nothing: the daemon's CPU and memory meanwhile."""
    from streamrnn_client.protocol import SessionOptions
    from streamrnn_client.websocket import open_socket
    sockets = []
    rss0 = probe.rss_mb()
    try:
        for _ in range(sessions):
            ws = await open_socket(url, "/v1/recognize")
            await ws.send(json.dumps(SessionOptions().config_message()))
            await ws.recv()
            sockets.append(ws)
        await asyncio.sleep(1.0)
        cpu0, rss1 = probe.cpu_seconds(), probe.rss_mb()
        await asyncio.sleep(hold_s)
        cpu1 = probe.cpu_seconds()
    finally:
        for ws in sockets:
            await ws.close()
    if cpu0 is None:
        return {"sessions": sessions}
    return {"sessions": sessions, "cpu_percent": round(100 * (cpu1 - cpu0) / hold_s, 2),
            "kb_per_session": round(1024 * (rss1 - rss0) / sessions, 1)}


def pocketsphinx_rtf(clips: list[np.ndarray], seconds: float, chunk_ms: int) -> dict:
    """The pocketsphinx peer (streamrnn.tools.peer), one stream, chunk by chunk as fast as it goes: CPU seconds
    per audio second."""
    from streamrnn.tools.peer import PeerError, PocketSphinx
    try:
        peer = PocketSphinx()
    except PeerError as err:
        return {"error": str(err)}
    audio = stream_audio_for(clips, 0, seconds)
    started = time.process_time()
    peer.transcribe(audio, chunk_ms)
    rtf = (time.process_time() - started) / (len(audio) / SAMPLE_RATE)
    return {"rtf": round(rtf, 4), "streams_per_core": round(1 / rtf, 1), "audio_s": round(len(audio) / SAMPLE_RATE, 1)}


def start_daemon(config: str | None, max_batch: int | None):
    from streamrnn.tools.daemon_process import Daemon
    return Daemon(Path(config) if config else None, serve_args=("--max-batch", str(max_batch)) if max_batch else ())


async def run_mode(target: Target, probe: DaemonProbe, clips, args, mode: str) -> list[Level]:
    await run_level(target, probe, clips, 1, 2.0, args.chunk_ms, "warm-up")  # first torch calls are slow
    levels = []
    for streams in args.streams:
        level = await run_level(target, probe, clips, streams, args.seconds, args.chunk_ms, mode)
        levels.append(level)
        if args.progress:
            print(f"# {mode} {streams} streams: p95 partial {level.p95_partial_ms} ms, rtf {level.rtf}",
                  flush=True)
    return levels


def with_daemon(args, max_batch: int | None, work):
    """Run `work(target, probe)` against --url, or against a fresh local daemon."""
    if args.url:
        http = args.url.replace("ws://", "http://").replace("wss://", "https://")
        return eventloop.run(work(Target(args.url, args.grpc, args.transport), DaemonProbe(http, None)))
    daemon = start_daemon(args.config, max_batch)
    try:
        return eventloop.run(work(Target(daemon.url, daemon.grpc, args.transport),
                                DaemonProbe(daemon.http, daemon.process.pid)))
    finally:
        daemon.stop()


async def batched_and_idle(target: Target, probe: DaemonProbe, clips, args) -> tuple[list[Level], dict | None]:
    """Idle sessions first, on the fresh daemon (later, memory freed by the load would hide theirs)."""
    idle = await idle_cost(target.url, probe, max(args.streams), 5.0) if args.idle else None
    mode = "daemon at --url" if args.url else "batched"  # a remote daemon's batching is its own
    return await run_mode(target, probe, clips, args, mode), idle


def benchmark(args) -> dict:
    clips = speech_clips(args.audio, args.manifest, args.split)
    levels, idle = with_daemon(args, None, lambda target, probe: batched_and_idle(target, probe, clips, args))
    result = {"transport": args.transport, "streams_tried": args.streams, "seconds_per_stream": args.seconds,
              "chunk_ms": args.chunk_ms,
              "cpu_cores": os.cpu_count(), "levels": [asdict(level) for level in levels]}
    result.update(headline(levels))
    if idle:
        result["idle"] = idle
    if args.compare and not args.url:
        unbatched = with_daemon(args, 1, lambda target, probe: run_mode(target, probe, clips, args, "unbatched"))
        result["levels"] += [asdict(level) for level in unbatched]
        result["unbatched"] = headline(unbatched)
        if levels[-1].rtf and unbatched[-1].rtf:
            result["throughput_ratio_at_max_streams"] = round(unbatched[-1].rtf / levels[-1].rtf, 2)
    if args.peer:
        result["pocketsphinx"] = pocketsphinx_rtf(clips, args.seconds, args.chunk_ms)
        if result["capacity_streams"] and "rtf" in result["pocketsphinx"]:
            result["streams_per_core"] = round(result["capacity_streams"] / os.cpu_count(), 1)
    return result


def headline(levels: list[Level]) -> dict:
    held = [lv.streams for lv in levels
            if lv.errors == 0 and lv.p95_partial_ms is not None and lv.p95_partial_ms < LATENCY_TARGET_MS]
    last = levels[-1]
    return {"capacity_streams": max(held, default=0), "p95_partial_latency_ms": last.p95_partial_ms,
            "rtf": last.rtf}


COLUMNS = [("mode", "mode"), ("streams", "streams"), ("p50_partial_ms", "p50 ms"), ("p95_partial_ms", "p95 ms"),
           ("p99_partial_ms", "p99 ms"), ("p95_final_ms", "final p95 ms"), ("rtf", "RTF"),
           ("cpu_s_per_audio_s", "CPU s/audio s"), ("rss_mb_per_stream", "MB/stream"),
           ("mean_batch", "batch"), ("errors", "errors")]


def table(result: dict) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for level in result["levels"]:
        lines.append("| " + " | ".join("-" if level[key] is None else str(level[key]) for key, _ in COLUMNS) + " |")
    lines.append("")
    lines.append(f"capacity (p95 partial < {LATENCY_TARGET_MS:g} ms): {result['capacity_streams']} streams; "
                 f"at {max(result['streams_tried'])} streams: p95 partial "
                 f"{result['p95_partial_latency_ms']} ms, RTF {result['rtf']}")
    if "unbatched" in result:
        lines.append(f"unbatched capacity: {result['unbatched']['capacity_streams']} streams; batched/unbatched "
                     f"throughput at the largest N: {result.get('throughput_ratio_at_max_streams')}x")
    if "idle" in result:
        lines.append(f"idle sessions: {json.dumps(result['idle'])}")
    if "pocketsphinx" in result:
        lines.append(f"pocketsphinx, one stream: {json.dumps(result['pocketsphinx'])}")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for color, mode in enumerate(dict.fromkeys(level["mode"] for level in result["levels"])):
        rows = [lv for lv in result["levels"] if lv["mode"] == mode and lv["p95_partial_ms"] is not None]
        for key, style in (("p50_partial_ms", "--"), ("p95_partial_ms", "-")):
            axes.plot([lv["streams"] for lv in rows], [lv[key] for lv in rows], style, marker="o",
                      color=f"C{color}", label=f"{mode} {key.split('_')[0]}")
    axes.axhline(LATENCY_TARGET_MS, color="grey", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_xlabel("concurrent real-time streams")
    axes.set_ylabel("partial latency (ms)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(args) -> None:
    if args.url and args.transport == "grpc" and not args.grpc:
        raise ValueError("--transport grpc with --url needs the daemon's gRPC address too (--grpc HOST:PORT)")
    result = benchmark(args)
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result) if args.json else table(result))


def add_arguments(parser) -> None:
    parser.add_argument("audio", nargs="*", help="speech files the streams play (or --manifest)")
    parser.add_argument("--manifest", help="a JSONL manifest whose utterances the streams play")
    parser.add_argument("--split", choices=["all", "train", "dev"], default="dev")
    parser.add_argument("--streams", type=stream_counts, default=[1, 8, 16, 32, 64],
                        help="concurrent stream counts to try, comma-separated (default 1,8,16,32,64)")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio seconds each stream sends")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per message")
    parser.add_argument("--url", help="a running daemon (ws://host:port) instead of starting one; "
                                      "no batching comparison, CPU and memory then")
    parser.add_argument("--transport", choices=list(TRANSPORTS), default="websocket",
                        help="how the streams reach the daemon (default websocket; the idle probe uses websocket)")
    parser.add_argument("--grpc", help="with --url and --transport grpc: the daemon's gRPC address (host:port)")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="skip the unbatched run (serve --max-batch 1)")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip pocketsphinx")
    parser.add_argument("--no-idle", dest="idle", action="store_false", help="skip the idle-sessions probe")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--plot", help="write a PNG of partial latency against streams here")
    parser.add_argument("--progress", action="store_true", help="a line per level as it finishes")


def stream_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--streams takes positive whole numbers separated by commas, got {text!r}")
    return sorted(set(counts))
