"""`streamrnn soak`: many clients stream to a running daemon through a proxy that cuts
their connections at random; each client resumes its session (streamrnn_client) and
its finals are checked against an uninterrupted run of the same audio."""
from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import numpy as np

from streamrnn_client.audio import encode_chunks, file_chunks, paced
from streamrnn_client.websocket import stream_audio

CHUNK_MS = 100


class ChaosProxy:
    """A TCP proxy on loopback that cuts connections abruptly (no WebSocket close, no FIN),
    as a broken network would: each after a random lifetime (mean `mean_life_s`), or all at
    once with `cut_all()`."""

    def __init__(self, host: str, port: int, mean_life_s: float = 0.0, seed: int = 0):
        self.target = host, port
        self.mean_life_s = mean_life_s
        self.random = random.Random(seed)
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.handlers: set[asyncio.Task] = set()
        self.cuts = 0
        self.server = None

    async def start(self) -> str:
        """Listen on a free loopback port; returns the ws:// URL that goes through the proxy."""
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self.server.close()
        for link in list(self.links):
            self.cut(link, count=False)
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def handle(self, client_reader, client_writer) -> None:
        self.handlers.add(asyncio.current_task())
        asyncio.current_task().add_done_callback(self.handlers.discard)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        link = client_writer, server_writer
        self.links.add(link)
        timer = None
        if self.mean_life_s:
            life = self.random.expovariate(1 / self.mean_life_s)
            timer = asyncio.get_running_loop().call_later(life, self.cut, link)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        if timer:
            timer.cancel()
        self.links.discard(link)
        client_writer.close()
        server_writer.close()

    def cut(self, link, count: bool = True) -> None:
        if link in self.links:
            self.links.discard(link)
            self.cuts += count
            for writer in link:
                writer.transport.abort()

    def cut_all(self) -> int:
        links = list(self.links)
        for link in links:
            self.cut(link)
        return len(links)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        writer.transport.abort()


@dataclass
class SoakReport:
    clients: int = 0
    seconds: float = 0.0
    sessions: int = 0
    failed_sessions: int = 0
    audio_chunks: int = 0
    audio_seconds: float = 0.0
    drops: int = 0
    resumes: int = 0
    expected_finals: int = 0
    lost_finals: int = 0  # of sessions that ended normally
    duplicated_finals: int = 0  # of sessions that ended normally
    finals_of_failed_sessions: int = 0  # expected finals of the sessions that failed (given up)
    out_of_order: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    errors: dict = field(default_factory=dict)  # failed sessions by error
    mismatches: list = field(default_factory=list)  # a few sessions whose finals differed, for a look

    def add_session(self, expected: list, got: list, resumes: int, error: str | None) -> None:
        """Finals compared as (text, start, end): `lost` are expected ones that never came,
        `duplicated` are ones that came twice or that no uninterrupted run produces."""
        self.sessions += 1
        self.resumes += resumes
        self.expected_finals += len(expected)
        if error:
            self.failed_sessions += 1
            self.finals_of_failed_sessions += len(expected)
            error = re.sub(r"[0-9a-f]{32}", "ID", error)[:160]
            self.errors[error] = self.errors.get(error, 0) + 1
            return
        lost = sum((Counter(expected) - Counter(got)).values())
        duplicated = sum((Counter(got) - Counter(expected)).values())
        self.lost_finals += lost
        self.duplicated_finals += duplicated
        if (lost or duplicated) and len(self.mismatches) < 3:
            self.mismatches.append({"expected": expected, "got": got})


def noise_clip(seconds: float, seed: int) -> np.ndarray:
    """Bursts of noise with quiet gaps: audio for tiny test models, which have no use for speech."""
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    envelope = np.repeat(rng.uniform(0.05, 1.0, len(samples) // 4000 + 1), 4000)[:len(samples)]
    return samples * envelope.astype(np.float32)


def clip_chunks(samples: np.ndarray) -> list[bytes]:
    return encode_chunks(samples, 16000, CHUNK_MS, "f32le")


def load_clips(paths: list[str], count: int, seconds: float) -> list[tuple[list[bytes], int]]:
    """Audio files, or generated 16 kHz clips, as f32le chunks, with their sample rate."""
    if paths:
        return [file_chunks(path, CHUNK_MS, "f32le") for path in paths]
    return [(clip_chunks(noise_clip(seconds * (0.5 + i / count), i)), 16000) for i in range(count)]


def finals_of(events: list[dict]) -> list[tuple]:
    return [(e["text"], e["start"], e["end"]) for e in events if e["type"] == "final"]


async def reference_finals(url: str, clips) -> list[list[tuple]]:
    """Each clip streamed once, uninterrupted, straight to the daemon."""
    references = []
    for chunks, rate in clips:
        events = [e async for e in stream_audio(url, chunks, sample_rate=rate, encoding="f32le",
                                                interim_results=False, suggestions=0, reconnect_for=0)]
        references.append(finals_of(events))
    return references


def daemon_rss_mb(url: str) -> float:
    """The resident memory of the daemon and its engine worker processes, from its /metrics."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    text = urllib.request.urlopen(f"{scheme}://{parts.netloc}/metrics", timeout=30).read().decode()
    match = re.search(r"^streamrnn_resident_memory_bytes ([\d.e+]+)$", text, re.MULTILINE)
    return round(float(match.group(1)) / 2 ** 20, 1) if match else float("nan")


async def soak(url: str, clients: int, seconds: float, mean_life_s: float, pace: float = 1.0,
               paths: list[str] | None = None, clip_seconds: float = 4.0, seed: int = 0) -> SoakReport:
    """`clients` clients stream clips one after another for `seconds`, through a proxy that
    cuts each connection after a random lifetime of mean `mean_life_s` seconds; `pace` 1.0 is
    real time, 2.0 twice as fast."""
    clips = load_clips(paths or [], 8, clip_seconds)
    references = await reference_finals(url, clips)
    report = SoakReport(clients=clients, rss_start_mb=daemon_rss_mb(url))
    parts = urlsplit(url)
    proxy = ChaosProxy(parts.hostname, parts.port or 80, mean_life_s, seed)
    proxy_url = await proxy.start()
    started = time.monotonic()
    deadline = started + seconds
    rng = random.Random(seed)

    async def client(index: int) -> None:
        await asyncio.sleep(rng.uniform(0, min(seconds, 5.0)))  # not all at once
        while time.monotonic() < deadline:
            number = rng.randrange(len(clips))
            await one_session(proxy_url, clips[number], references[number], report, pace)

    await asyncio.gather(*(client(i) for i in range(clients)))
    await proxy.close()
    report.seconds = round(time.monotonic() - started, 1)
    report.drops = proxy.cuts
    report.rss_end_mb = daemon_rss_mb(url)
    return report


async def one_session(url: str, clip, expected: list, report: SoakReport, pace: float) -> None:
    chunks, rate = clip
    error = None
    events = []
    try:
        async for event in stream_audio(url, paced(chunks, CHUNK_MS / 1000 / pace), sample_rate=rate,
                                        encoding="f32le", interim_results=False, suggestions=0):
            events.append(event)
    except Exception as err:  # noqa: BLE001 (counted and reported by kind: a soak run goes on)
        error = f"{type(err).__name__}: {err}"
    record_session(report, chunks, expected, events, error)


def record_session(report: SoakReport, chunks: list[bytes], expected: list, events: list[dict],
                   error: str | None) -> None:
    """A session's events (and its client's error, if it gave up) counted into the report."""
    seqs = [e["seq"] for e in events if "seq" in e]
    report.out_of_order += sum(b <= a for a, b in itertools.pairwise(seqs))
    report.audio_chunks += len(chunks)
    report.audio_seconds += len(chunks) * CHUNK_MS / 1000
    report.add_session(expected, finals_of(events), sum(e["type"] == "resumed" for e in events), error)


def add_arguments(soak_parser) -> None:
    soak_parser.add_argument("--url", default="ws://127.0.0.1:8080", help="the daemon (ws://)")
    soak_parser.add_argument("--clients", type=int, default=200)
    soak_parser.add_argument("--seconds", type=float, default=300.0, help="how long clients keep starting sessions")
    soak_parser.add_argument("--drop-after", type=float, default=5.0,
                             help="mean seconds a connection lives before the proxy cuts it (0: never)")
    soak_parser.add_argument("--pace", type=float, default=1.0, help="audio speed: 1 real time, 2 twice as fast")
    soak_parser.add_argument("--audio", nargs="*", default=[], help="audio files (default: generated noise clips)")
    soak_parser.add_argument("--clip-seconds", type=float, default=4.0, help="length of generated clips")
    soak_parser.add_argument("--seed", type=int, default=0)


def main(args) -> None:
    report = asyncio.run(soak(args.url, args.clients, args.seconds, args.drop_after, args.pace, args.audio,
                              args.clip_seconds, args.seed))
    result = asdict(report)
    result["audio_seconds"] = round(result["audio_seconds"], 1)
    print(json.dumps(result, indent=1))
    if report.lost_finals or report.duplicated_finals or report.failed_sessions or report.out_of_order:
        sys.exit(1)
