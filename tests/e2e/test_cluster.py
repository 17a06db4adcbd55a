"""Replicas behind nginx sharing their sessions through Redis ([cluster]): real redis-server,
nginx and daemons on loopback. A replica killed (SIGKILL) mid-utterance: its client resumes
through nginx on the other replica with the finals of an uninterrupted run, on both transports.
Redis killed: sessions go on, and the daemon says so in its log and /metrics."""
import asyncio
import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from daemon import Daemon, metric
from support import needs_program, tiny_daemon_config
from websockets.asyncio.client import connect

from streamrnn.serve.cluster import ALIVE_FOR_S, REPLICAS
from streamrnn.tools.cluster_process import Nginx, RedisServer, free_port
from streamrnn.tools.soak import clip_chunks, finals_of, noise_clip
from streamrnn_client.grpc_client import GrpcClient, event_from_proto
from streamrnn_client.websocket import stream_audio

# Short utterances: many finals per clip, so that a kill falls between finals.
CLUSTER_CONFIG = "[endpoint]\nmax_utterance_s = 0.6\n[resume]\nwindow_s = 20.0\nack_interval_s = 0.2\n"
CONFIG = {"type": "config", "sample_rate": 16000, "encoding": "f32le"}
CHUNK_S = 0.1  # clip_chunks' chunk length
PACE_S = 0.03  # seconds between chunks: faster than real time, slow enough to kill mid-stream


class Cluster:
    """Redis, two replicas on fixed ports, nginx in front of them."""

    def __init__(self, config, folder, redis_port: int):
        self.config = config
        self.redis = RedisServer(folder / "redis", redis_port)
        self.ports = [(free_port(), free_port()) for _ in range(2)]
        self.replicas, self.nginx = [], None
        try:
            self.replicas = [self.start_replica(i) for i in range(2)]
            self.nginx = Nginx(folder / "nginx", [f"127.0.0.1:{h}" for h, _ in self.ports],
                               [f"127.0.0.1:{g}" for _, g in self.ports])
        except RuntimeError:
            self.stop()
            raise

    def start_replica(self, index: int) -> Daemon:
        http, grpc = self.ports[index]
        return Daemon(self.config, serve_args=("--port", str(http), "--grpc-port", str(grpc)))

    def holder(self, session_id: str) -> int:
        """The replica the session is attached to now."""
        for index, replica in enumerate(self.replicas):
            if replica.alive and f"session {session_id} attached" in replica.log:
                return index
        raise AssertionError(f"no live replica has session {session_id}")

    def logs(self) -> str:
        return "\n".join(f"replica {i}:\n{replica.log}" for i, replica in enumerate(self.replicas))

    def revive_all(self) -> None:
        for index, replica in enumerate(self.replicas):
            if not replica.alive:
                self.replicas[index] = self.start_replica(index)

    def stop(self) -> None:
        for part in [*self.replicas, self.nginx, self.redis]:
            if part is not None:
                part.stop()


@pytest.fixture(scope="module")
def cluster(tiny_models, tmp_path_factory):
    for program in ("redis-server", "nginx"):
        needs_program(program)
    folder = tmp_path_factory.mktemp("cluster")
    redis_port = free_port()
    config = tiny_daemon_config(tiny_models, folder, CLUSTER_CONFIG +
                                f'[cluster]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n')
    group = Cluster(config, folder, redis_port)
    yield group
    group.stop()


@pytest.fixture(scope="module")
def chunks():
    return clip_chunks(noise_clip(6.0, seed=3))


@pytest.fixture(scope="module")
def expected(cluster, chunks):
    """The finals of an uninterrupted run, straight to one replica."""
    async def run():
        return [e async for e in stream_audio(cluster.replicas[0].url, chunks, encoding="f32le", reconnect_for=0)]
    finals = finals_of(asyncio.run(run()))
    assert len(finals) >= 3
    return finals


def assert_once_in_order(events):
    seqs = [e["seq"] for e in events if e.get("seq")]
    assert seqs == sorted(set(seqs))


def stream_websocket(url, chunks, on_event):
    async def paced():
        for chunk in chunks:
            yield chunk
            await asyncio.sleep(PACE_S)

    async def run():
        events = []
        async for event in stream_audio(url, paced(), encoding="f32le", reconnect_for=30):
            events.append(event)
            on_event(events)
        return events
    return asyncio.run(run())


def stream_grpc(address, chunks, on_event):
    def paced():
        for chunk in chunks:
            yield chunk
            time.sleep(PACE_S)

    events = []
    with GrpcClient(address) as client:
        for message in client.resuming_recognize(paced(), reconnect_for=30, encoding="f32le"):
            events.append(event_from_proto(message))
            on_event(events)
    return events


@pytest.mark.parametrize("transport", ["websocket", "grpc"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_session_survives_its_replica(cluster, chunks, expected, transport, sig):
    """The replica holding the session is SIGKILLed (or SIGTERMed: it hands its sessions over)
    after the first final, while the client goes on speaking: the client resumes through nginx
    on the other replica, which takes the session over from Redis."""
    cluster.revive_all()
    stopped = []

    def on_event(events):
        if events[-1]["type"] == "final" and not stopped:
            stopped.append(cluster.holder(events[0]["session_id"]))
            cluster.replicas[stopped[0]].process.send_signal(sig)

    if transport == "websocket":
        events = stream_websocket(cluster.nginx.url, chunks, on_event)
    else:
        events = stream_grpc(cluster.nginx.grpc, chunks, on_event)
    assert finals_of(events) == expected, cluster.logs()
    assert_once_in_order(events)
    assert [e["type"] for e in events].count("resumed") >= 1 and events[-1]["reason"] == "eof"
    session_id = events[0]["session_id"]
    survivor = cluster.replicas[1 - stopped[0]]
    assert f"session {session_id} taken over from redis" in survivor.log
    assert metric(survivor, "streamrnn_cluster_restores_total") >= 1
    if sig == signal.SIGTERM:
        assert f"session {session_id} handed over" in cluster.replicas[stopped[0]].log
    cluster.replicas[stopped[0]].process.wait(timeout=60)  # a draining replica is alive, but not for the next test


def test_a_session_survives_its_replica_with_engine_workers(tiny_models, tmp_path, chunks, expected):
    """The same with the engine in worker processes (`engine_processes`): a takeover only opens
    an engine session and feeds it, so it works on either engine."""
    redis_port = free_port()
    config = tiny_daemon_config(tiny_models, tmp_path, CLUSTER_CONFIG + "[batching]\nengine_processes = 1\n"
                                f'[cluster]\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n')
    workers = Cluster(config, tmp_path, redis_port)
    stopped = []

    def on_event(events):
        if events[-1]["type"] == "final" and not stopped:
            stopped.append(workers.holder(events[0]["session_id"]))
            workers.replicas[stopped[0]].process.kill()

    try:
        events = stream_websocket(workers.nginx.url, chunks, on_event)
        assert finals_of(events) == expected, workers.logs()
        assert_once_in_order(events)
        assert "taken over from redis" in workers.replicas[1 - stopped[0]].log
    finally:
        workers.stop()


def test_a_session_moves_between_live_replicas_and_back(cluster, chunks, expected):
    """Both replicas alive: the client's connection drops and its resume lands on the other
    replica, then again on the first. Each takes the session over from the other (the first one's
    stale copy is let go), and the finals are those of an uninterrupted run."""
    cluster.revive_all()
    thirds = [len(chunks) // 3, 2 * len(chunks) // 3, len(chunks)]

    async def connection(replica, first_message, until, events):
        """Send audio from where the server says it is up to chunk `until`; then drop or end."""
        async with connect(replica.url + "/v1/recognize") as ws:
            await ws.send(json.dumps(first_message))
            started = json.loads(await ws.recv())
            events.append(started)
            offset = started.get("ack", 0)
            for chunk in chunks[:until]:
                if offset <= 0:
                    await ws.send(chunk)
                offset -= len(chunk)
            if until == len(chunks):
                await ws.send(json.dumps({"type": "eof"}))
                await receive_until(ws, "end", events)
            else:
                await receive_until(ws, "final", events)
                ws.transport.abort()  # the connection drops: no close frame, no eof
        return started

    async def run():
        events = []
        session = await connection(cluster.replicas[0], CONFIG, thirds[0], events)
        for replica, until in ((cluster.replicas[1], thirds[1]), (cluster.replicas[0], thirds[2])):
            last_seq = max(e.get("seq", 0) for e in events)
            resume = {"type": "resume", "session_id": session["session_id"], "resume_token": session["resume_token"],
                      "last_seq": last_seq}
            resumed = await connection(replica, resume, until, events)
            assert resumed["type"] == "resumed", resumed
        return session, events

    session, events = asyncio.run(run())
    assert finals_of(events) == expected
    assert_once_in_order(events)
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "eof"
    first, second = cluster.replicas
    assert f"session {session['session_id']} taken over from redis" in second.log
    assert f"session {session['session_id']}: taken over by another replica; let go here" in first.log
    assert first.log.count(f"session {session['session_id']} taken over from redis") == 1


async def receive_until(ws, kind, events):
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        events.append(event)
        if event["type"] == kind:
            return


def test_clients_wait_while_the_load_balancer_has_no_replica(tiny_models, tmp_path, chunks, expected):
    """nginx with no replica up answers 502: the resuming clients (WebSocket and gRPC) try again
    until one is up (here after 2 s), rather than failing the session."""
    http, grpc = free_port(), free_port()
    nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{http}"], [f"127.0.0.1:{grpc}"])
    config = tiny_daemon_config(tiny_models, tmp_path, CLUSTER_CONFIG)
    started = []

    def start_later():
        time.sleep(2.0)
        started.append(Daemon(config, serve_args=("--port", str(http), "--grpc-port", str(grpc))))

    later = threading.Thread(target=start_later)
    later.start()
    try:
        with ThreadPoolExecutor(1) as pool:
            grpc_events = pool.submit(stream_grpc, nginx.grpc, chunks, lambda events: None)
            websocket_events = stream_websocket(nginx.url, chunks, lambda events: None)
            assert finals_of(websocket_events) == expected
            assert finals_of(grpc_events.result(timeout=120)) == expected
    finally:
        later.join()
        for daemon in started:
            daemon.stop()
        nginx.stop()
    # the clients were refused before the daemon was up: WebSocket with 502, gRPC with the 204 of
    # UNAVAILABLE (nginx.conf's @no_replica)
    access = (tmp_path / "nginx" / "access.log").read_text().splitlines()
    assert any('"GET /v1/recognize HTTP/1.1" 502 ' in line for line in access)
    assert any('StreamingRecognize HTTP/2.0" 204 ' in line for line in access)


def test_a_lone_replica_drains_its_sessions(cluster, chunks, expected):
    """With no other replica alive to take them, SIGTERM finishes the sessions as a single daemon does."""
    cluster.revive_all()
    cluster.replicas[1].stop()
    replica = cluster.replicas[0]
    # a replica SIGKILLed by an earlier test stays listed as alive for ALIVE_FOR_S after its death
    assert wait_for(lambda: live_replicas(cluster.redis) == 1, timeout=ALIVE_FOR_S + 5)

    def on_event(events):
        if events[-1]["type"] == "final" and len(finals_of(events)) == 1:
            replica.process.send_signal(signal.SIGTERM)

    events = stream_websocket(replica.url, chunks, on_event)
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "shutdown"
    assert finals_of(events)[0] == expected[0]
    assert replica.process.wait(30) == 0 and "handed over" not in replica.log


def test_sessions_go_on_when_redis_dies(cluster, chunks, expected):
    cluster.revive_all()
    replica = cluster.replicas[0]
    assert wait_for(lambda: metric(replica, "streamrnn_cluster_redis_up") == 1)
    cluster.redis.kill()
    try:
        async def run():
            return [e async for e in stream_audio(replica.url, chunks, encoding="f32le", reconnect_for=0)]
        events = asyncio.run(run())
        assert finals_of(events) == expected and events[-1]["reason"] == "eof"
        assert wait_for(lambda: metric(replica, "streamrnn_cluster_redis_up") == 0)
        assert re.search(r"redis at redis://127\.0\.0\.1:\d+/0 is unreachable", replica.log)
    finally:
        cluster.redis.start()
    assert wait_for(lambda: metric(replica, "streamrnn_cluster_redis_up") == 1)
    assert "is reachable: sessions are shared" in replica.log.split("is unreachable")[-1]


def live_replicas(server: RedisServer) -> int:
    """How many replicas the registry in Redis lists as alive now."""
    with redis.Redis(port=server.port, socket_timeout=10) as client:
        return client.zcount(REPLICAS, time.time(), "+inf")


def wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False

