"""WebSocket and plain HTTP on one port: /v1/recognize, /v1/subscribe/{id},
/v1/suggest, and /, /healthz, /metrics."""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from importlib import resources

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import telemetry
from .engine import SessionOptions
from .service import RecognitionService, ServiceError

log = logging.getLogger("streamrnn.ws")
WEB_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
             "/app.js": ("app.js", "text/javascript; charset=utf-8"),
             "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8")}
MAX_MESSAGE_BYTES = 1 << 20


def http_response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, body)


def options_from(message: dict) -> SessionOptions:
    known = {"sample_rate", "encoding", "interim_results", "suggestions", "phrases"}
    unknown = set(message) - known - {"type"}
    if unknown:
        raise ServiceError("bad_config", f"unknown config fields: {', '.join(sorted(unknown))}")
    values = {k: message[k] for k in known if k in message}
    for key, kind in (("sample_rate", int), ("suggestions", int), ("interim_results", bool)):
        if key in values and not is_exactly(values[key], kind):
            raise ServiceError("bad_config", f"config field {key} must be {kind.__name__}, got {values[key]!r}")
    return SessionOptions(**values)


def is_exactly(value, kind) -> bool:
    """isinstance, except that a JSON true/false is not a number."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def parse_json(text: str) -> dict:
    try:
        message = json.loads(text)
    except json.JSONDecodeError as err:
        raise ServiceError("bad_message", f"message is not valid JSON: {err}") from err
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ServiceError("bad_message", 'a text message must be a JSON object with a "type" field')
    return message


class WebSocketServer:
    def __init__(self, service: RecognitionService, require_config: bool = False):
        self.service = service
        self.require_config = require_config

    def serve(self, host: str, port: int, **kwargs):
        return serve(self.route, host, port, process_request=self.process_request,
                     max_size=MAX_MESSAGE_BYTES, **kwargs)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?")[0]
        if path == "/healthz":
            return http_response(HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/metrics":
            return http_response(HTTPStatus.OK, telemetry.exposition(), telemetry.CONTENT_TYPE)
        if path in WEB_FILES:
            name, content_type = WEB_FILES[path]
            body = resources.files("streamrnn.web").joinpath(name).read_bytes()
            return http_response(HTTPStatus.OK, body, content_type)
        if path in ("/v1/recognize", "/v1/suggest") or path.startswith("/v1/subscribe/"):
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return http_response(HTTPStatus.UPGRADE_REQUIRED, b"this endpoint speaks WebSocket\n",
                                     "text/plain")
            return None
        return http_response(HTTPStatus.NOT_FOUND, f"no such path: {path}\n".encode(), "text/plain")

    async def route(self, connection: ServerConnection) -> None:
        path = connection.request.path.split("?")[0]
        try:
            if path == "/v1/recognize":
                await self.recognize(connection)
            elif path == "/v1/suggest":
                await self.suggest(connection)
            else:
                await self.subscribe(connection, path.removeprefix("/v1/subscribe/"))
        except ConnectionClosed:
            pass

    async def send(self, connection: ServerConnection, events: list[dict]) -> None:
        for event in events:
            await connection.send(json.dumps(event))

    async def send_error(self, connection: ServerConnection, error: ServiceError) -> None:
        telemetry.ERRORS.labels(error.code).inc()
        await connection.send(json.dumps(error.event()))

    async def open_session(self, connection: ServerConnection):
        """The session from a first config message, or with defaults if audio comes first."""
        first = await connection.recv()
        if isinstance(first, bytes):
            if self.require_config:
                raise ServiceError("config_required", "send a config message before any audio")
            return self.service.open(SessionOptions(), "websocket"), first
        message = parse_json(first)
        if message["type"] != "config":
            raise ServiceError("config_required", f'the first message must be config, got {message["type"]!r}')
        return self.service.open(options_from(message), "websocket"), None

    async def recognize(self, connection: ServerConnection) -> None:
        try:
            live, pending_audio = await self.open_session(connection)
        except ServiceError as err:
            await self.send_error(connection, err)
            await connection.close(1008, err.code)
            return
        log.info("session %s start (websocket %s)", live.id, connection.remote_address)
        live.notify = lambda events: self.send(connection, events)
        try:
            await self.send(connection, [{"type": "session", "session_id": live.id}])
            if pending_audio:
                await self.send(connection, await self.service.feed(live, pending_audio))
            await self.stream(connection, live)
        finally:
            if live.id in self.service.sessions:  # client left without eof: its final still goes out
                await self.service.finish(live, "disconnect")
            log.info("session %s end (%d finals)", live.id, live.session.finals)

    async def stream(self, connection: ServerConnection, live) -> None:
        async for message in connection:
            if live.id not in self.service.sessions:  # finished by a server shutdown
                return
            try:
                if isinstance(message, bytes):
                    await self.send(connection, await self.service.feed(live, message))
                    continue
                kind = parse_json(message)["type"]
                if kind == "eof":
                    await self.send(connection, await self.service.finish(live))
                    return
                raise ServiceError("bad_message", f"unknown message type {kind!r}; expected audio or eof")
            except ServiceError as err:
                await self.send_error(connection, err)

    async def subscribe(self, connection: ServerConnection, session_id: str) -> None:
        try:
            live, queue = self.service.subscribe(session_id)
        except ServiceError as err:
            await self.send_error(connection, err)
            await connection.close(1008, err.code)
            return
        telemetry.SUBSCRIBERS_ACTIVE.inc()
        try:
            while (event := await queue.get()) is not None:
                await connection.send(json.dumps(event))
            await connection.close()
        finally:
            live.hub.unsubscribe(queue)
            telemetry.SUBSCRIBERS_ACTIVE.dec()

    async def suggest(self, connection: ServerConnection) -> None:
        async for message in connection:
            try:
                if isinstance(message, bytes):
                    raise ServiceError("bad_message", "send text (plain or JSON), not binary")
                request = parse_json(message) if message.lstrip().startswith("{") \
                    else {"type": "suggest", "text": message}
                if not isinstance(request.get("text", ""), str):
                    raise ServiceError("bad_message", "text must be a string")
                words = await self.service.suggest(request.get("text", ""), request.get("count"))
                await connection.send(json.dumps({"type": "suggestions", "words": words}))
            except ServiceError as err:
                await self.send_error(connection, err)
