"""`streamrnn serve`: gRPC and WebSocket/HTTP from one engine, until SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import signal

from streamrnn.config import Config
from streamrnn.engine.backend import build_engine
from streamrnn.serve import eventloop, telemetry, tls
from streamrnn.serve.auth import KeyCheck
from streamrnn.serve.cluster import ClusterStore
from streamrnn.serve.grpc_server import start_grpc
from streamrnn.serve.openai_api import OpenAIApi
from streamrnn.serve.service import RecognitionService
from streamrnn.serve.ws_server import WebSocketServer
from streamrnn.serve.wyoming_server import WyomingServer

log = logging.getLogger("streamrnn")


async def serve(config: Config) -> None:
    security = tls.server_context(config.tls), tls.grpc_server_credentials(config.tls)
    keys = KeyCheck(config.auth.api_key_sha256)
    recognizer, engine = build_engine(config, telemetry.record_batch, telemetry.record_restart)
    cluster = start_cluster(config)
    service = RecognitionService(recognizer, engine, config.server.max_sessions, config.limits, config.resume,
                                 cluster)
    try:
        await serve_until_stopped(config, service, security, keys, cluster)
    finally:  # also when a port cannot be bound: the engine's worker processes end quietly with it
        service.close_engine()
    if cluster is not None:
        await asyncio.gather(*service.background, return_exceptions=True)
        await cluster.close()


async def serve_until_stopped(config: Config, service: RecognitionService, security: tuple, keys: KeyCheck,
                              cluster: ClusterStore | None) -> None:
    server_config = config.server
    ssl_context, credentials = security
    if cluster is not None:
        await cluster.check([])
        keeper = asyncio.create_task(cluster.keep(lambda: [s.id for s in service.sessions.values() if s.shared]))
    openai_api = OpenAIApi(service, keys, config.limits.max_upload_bytes)
    websocket = await WebSocketServer(service, server_config.require_config, keys, ssl_context, openai_api).serve(
        server_config.host, server_config.http_port)
    grpc_server = await start_grpc(service, f"{server_config.host}:{server_config.grpc_port}",
                                   server_config.require_config, credentials, keys)
    http_port = websocket.sockets[0].getsockname()[1]
    wyoming = WyomingServer(service) if config.wyoming.enabled else None
    wyoming_port = await wyoming.start(server_config.host, config.wyoming.port) if wyoming else 0
    host = f"[{server_config.host}]" if ":" in server_config.host else server_config.host
    scheme, grpc_security = ("https", "tls") if ssl_context else ("http", "plain text")
    log.info("ready: http and websocket on %s://%s:%d, grpc on %s:%d%s (models on %s; grpc %s; %s)",
             scheme, host, http_port, host, grpc_server.bound_port,
             f", wyoming on {host}:{wyoming_port}" if wyoming else "", service.recognizer.device, grpc_security,
             "api keys required" if keys.required else "no api keys")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await drain(service, websocket, grpc_server, openai_api, wyoming, server_config.drain_timeout_s)
    if cluster is not None:
        keeper.cancel()


def start_cluster(config: Config) -> ClusterStore | None:
    """The Redis store of [cluster], None when it is off. Its keys outlive a dead replica by the
    resume window, so that its clients can resume elsewhere."""
    if not config.cluster.redis_url:
        return None
    cluster = ClusterStore(config.cluster.redis_url, config.resume.window_s)
    log.info("cluster: sessions shared through redis at %s", cluster.url)
    return cluster


async def drain(service: RecognitionService, websocket, grpc_server, openai_api: OpenAIApi,
                wyoming: WyomingServer | None, timeout: float) -> None:
    """Stop taking sessions, finish the open ones (their finals and `end` reach the clients),
    then close; past `timeout` seconds, give up on what is left and exit 1."""
    log.info("stopping: finishing %d open sessions", len(service.sessions))
    websocket.close(close_connections=False)  # no new connections; the open ones get their finals
    if wyoming:
        wyoming.close()
    grpc_stopped = asyncio.create_task(grpc_server.stop(timeout))
    try:
        async with asyncio.timeout(timeout):
            await service.drain()
            for connection in websocket.connections:  # subscribers and /v1/suggest clients
                asyncio.create_task(connection.close(1001, "server shutting down"))
            await websocket.wait_closed()
            await asyncio.gather(*openai_api.tasks)  # their answers (cut short by the drain) are out
            if wyoming:
                await wyoming.drain()
            await grpc_stopped
    except TimeoutError:
        log.error("drain timed out after %.1f s with %d sessions unfinished; exiting anyway",
                  timeout, len(service.sessions))
        raise SystemExit(1)
    log.info("stopped")


def main(config: Config) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    eventloop.run(serve(config))
