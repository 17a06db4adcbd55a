"""`streamrnn chaos`: replicas that die while their clients speak. Starts redis-server, nginx and
N daemon replicas sharing their sessions through Redis ([cluster]) on loopback; many clients
stream real speech through nginx, over WebSocket (soak's resuming clients) and gRPC (the resuming
GrpcClient), each session's finals checked against an uninterrupted run of the same audio, while a random replica is SIGKILLed every few seconds and
started again. Reports lost, duplicated and out-of-order finals and failed sessions."""
from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from streamrnn.tools.cluster_process import Nginx, RedisServer, free_port
from streamrnn.tools.daemon_process import Daemon
from streamrnn.tools.soak import CHUNK_MS, SoakReport, clip_chunks, one_session, record_session, reference_finals
from streamrnn_client.grpc_client import GrpcClient, event_from_proto


@dataclass
class ChaosReport(SoakReport):
    replicas: int = 0
    grpc_clients: int = 0  # of `clients`, those on gRPC (the others on WebSocket)
    kills: int = 0
    takeovers: int = 0  # sessions restored from Redis on another replica than the one that started them
    redis_peak_memory_mb: float = 0.0  # Redis' used_memory at its highest, sampled every second
    redis_idle_memory_mb: float = 0.0  # before any session
    peak_live_sessions: int = 0  # sessions under way at once, at their most


class Replicas:
    """N daemons on fixed loopback ports (so that nginx finds a restarted one), sharing Redis."""

    def __init__(self, count: int, config: str | None, redis_url: str):
        self.config, self.redis_url = Path(config) if config else None, redis_url
        self.ports = [(free_port(), free_port()) for _ in range(count)]
        self.daemons: list[Daemon | None] = [None] * count
        self.started: list[Daemon] = []  # every process ever started, for their logs
        threads = [threading.Thread(target=self.start, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not all(self.daemons):
            self.stop()
            raise RuntimeError("a replica did not start (see the errors above)")

    def start(self, index: int) -> None:
        http, grpc = self.ports[index]
        try:
            daemon = Daemon(self.config, serve_args=("--port", str(http), "--grpc-port", str(grpc),
                                                     "--redis-url", self.redis_url))
        except RuntimeError as err:
            print(f"replica {index}: {err}", file=sys.stderr)
            return
        self.daemons[index] = daemon
        self.started.append(daemon)

    def alive(self) -> list[int]:
        return [i for i, d in enumerate(self.daemons) if d is not None and d.alive]

    def kill_and_restart(self, index: int) -> threading.Thread:
        """SIGKILL the replica; a thread starts it again (its models take a while to load)."""
        self.daemons[index].stop(sig=9)
        self.daemons[index] = None
        thread = threading.Thread(target=self.start, args=(index,), daemon=True)
        thread.start()
        return thread

    def upstreams(self, which: int) -> list[str]:
        return [f"127.0.0.1:{ports[which]}" for ports in self.ports]

    def takeovers(self) -> int:
        return sum(d.log.count("taken over from redis") for d in self.started)

    def stop(self) -> None:
        for daemon in self.daemons:
            if daemon is not None:
                daemon.stop()


async def kill_every(replicas: Replicas, period: float, deadline: float, rng: random.Random,
                     report: ChaosReport) -> None:
    """A random replica SIGKILLed every `period` seconds (while at least one other one serves)."""
    restarts = []
    while time.monotonic() + period < deadline:
        await asyncio.sleep(period)
        alive = replicas.alive()
        if len(alive) >= 2:
            restarts.append(replicas.kill_and_restart(rng.choice(alive)))
            report.kills += 1
    for thread in restarts:
        await asyncio.to_thread(thread.join)


async def sample_redis(redis: RedisServer, report: ChaosReport, live: list[int]) -> None:
    while True:
        used = int(redis.info().get("used_memory", 0))
        report.redis_peak_memory_mb = max(report.redis_peak_memory_mb, round(used / 2 ** 20, 1))
        report.peak_live_sessions = max(report.peak_live_sessions, live[0])
        await asyncio.sleep(1.0)


async def chaos(args, clips, replicas: Replicas, nginx: Nginx, redis: RedisServer) -> ChaosReport:
    references = await reference_finals(f"ws://127.0.0.1:{replicas.ports[0][0]}", clips)
    report = ChaosReport(clients=args.clients, replicas=len(replicas.ports), grpc_clients=args.grpc_clients)
    report.redis_idle_memory_mb = round(int(redis.info().get("used_memory", 0)) / 2 ** 20, 1)
    rng = random.Random(args.seed)
    started = time.monotonic()
    deadline = started + args.seconds
    live = [0]

    grpc_threads = ThreadPoolExecutor(max(1, args.grpc_clients))

    async def client(grpc: bool) -> None:
        await asyncio.sleep(rng.uniform(0, min(args.seconds, 5.0)))  # not all at once
        while time.monotonic() < deadline:
            number = rng.randrange(len(clips))
            failed = report.failed_sessions
            live[0] += 1
            if grpc:
                events, error = await asyncio.get_running_loop().run_in_executor(
                    grpc_threads, grpc_session, nginx.grpc, clips[number], args.pace)
                record_session(report, clips[number][0], references[number], events, error)
            else:
                await one_session(nginx.url, clips[number], references[number], report, args.pace)
            live[0] -= 1
            if report.failed_sessions > failed:  # not a tight loop of failures: a person would wait too
                await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample_redis(redis, report, live))
    killer = asyncio.create_task(kill_every(replicas, args.kill_every, deadline, rng, report))
    await asyncio.gather(*(client(i < args.grpc_clients) for i in range(args.clients)))
    grpc_threads.shutdown()
    await killer
    sampler.cancel()
    report.seconds = round(time.monotonic() - started, 1)
    report.takeovers = replicas.takeovers()
    return report


def grpc_session(address: str, clip, pace: float) -> tuple[list[dict], str | None]:
    """One session of a resuming gRPC client (blocking: run on a thread): its events, and its
    error if it gave up."""
    chunks, rate = clip

    def paced():
        start = time.monotonic()
        for index, chunk in enumerate(chunks):
            time.sleep(max(0.0, start + index * CHUNK_MS / 1000 / pace - time.monotonic()))
            yield chunk

    events = []
    try:
        with GrpcClient(address) as client:
            for message in client.resuming_recognize(paced(), sample_rate=rate, encoding="f32le",
                                                     interim_results=False, suggestions=0):
                events.append(event_from_proto(message))
    except Exception as err:  # noqa: BLE001 (counted and reported by kind: a chaos run goes on)
        return events, f"{type(err).__name__}: {err}"
    return events, None


def run(args) -> ChaosReport:
    from streamrnn.tools.bench import speech_clips  # torch: not for --help
    clips = [(clip_chunks(s), 16000) for s in speech_clips(args.audio, args.manifest, args.split, args.limit)]
    with tempfile.TemporaryDirectory(prefix="streamrnn-chaos-") as temporary:
        folder = Path(args.logs or temporary)
        redis = RedisServer(folder / "redis")
        replicas = nginx = None
        try:
            replicas = Replicas(args.replicas, args.config, redis.url)
            nginx = Nginx(folder / "nginx", replicas.upstreams(0), replicas.upstreams(1))
            return asyncio.run(chaos(args, clips, replicas, nginx, redis))
        finally:
            for part in (nginx, replicas, redis):
                if part is not None:
                    part.stop()
            if args.logs and replicas is not None:
                for number, daemon in enumerate(replicas.started):
                    (folder / f"replica-{number}.log").write_text(daemon.log)


def add_arguments(parser) -> None:
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long clients keep starting sessions")
    parser.add_argument("--grpc-clients", type=int, help="how many of the clients use gRPC (default: a third)")
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds between SIGKILLs of a replica")
    parser.add_argument("--audio", nargs="*", default=[], help="speech files")
    parser.add_argument("--manifest", help="a JSONL manifest of speech (e.g. ../shared/data/speech/*.jsonl)")
    parser.add_argument("--split", choices=["all", "train", "dev"], default="dev")
    parser.add_argument("--limit", type=int, default=8, help="at most this many clips from the manifest")
    parser.add_argument("--pace", type=float, default=1.0, help="audio speed: 1 real time, 2 twice as fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logs", help="keep the logs here: redis/, nginx/ and each replica process's log")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def main(args) -> None:
    if args.grpc_clients is None:
        args.grpc_clients = args.clients // 3
    if args.replicas < 2 or args.clients < 1 or args.seconds <= 0 or args.kill_every <= 0:
        raise ValueError("--replicas must be at least 2, --clients at least 1, --seconds and --kill-every positive")
    if not 0 <= args.grpc_clients <= args.clients:
        raise ValueError("--grpc-clients must be between 0 and --clients")
    report = run(args)
    result = asdict(report)
    result["audio_seconds"] = round(result["audio_seconds"], 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("replicas", "clients", "grpc_clients", "seconds", "kills", "sessions", "takeovers", "expected_finals",
                    "lost_finals", "duplicated_finals", "out_of_order", "failed_sessions",
                    "redis_peak_memory_mb", "peak_live_sessions"):
            print(f"{key:>20}: {result[key]}")
        for error, count in result["errors"].items():
            print(f"  failed x{count}: {error}")
    if report.lost_finals or report.duplicated_finals or report.failed_sessions or report.out_of_order:
        sys.exit(1)
