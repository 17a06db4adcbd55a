"""WebSocket and plain HTTP on one port: /v1/recognize, /v1/subscribe/{id},
/v1/suggest, /vosk (Vosk's protocol), and /, /healthz, /metrics; the OpenAI-style API's
/v1/audio/transcriptions and /v1/models (openai_api, through plain_http)."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamrnn.serve import telemetry, vosk_ws
from streamrnn.serve.auth import COOKIE, QUERY_KEY, QUERY_READ_TOKEN, KeyCheck, bearer
from streamrnn.serve.connection import ClientMessage, Receive, feed_session, open_session
from streamrnn.serve.openai_api import OpenAIApi
from streamrnn.serve.plain_http import SharedPortConnection
from streamrnn.serve.service import RecognitionService, ServiceError
from streamrnn_client.protocol import ErrorCode, SessionOptions

log = logging.getLogger("streamrnn.ws")
WEB_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
             "/app.js": ("app.js", "text/javascript; charset=utf-8"),
             "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8")}
# What the kernel and the transport may hold for a subscriber. Small, so that a subscriber
# that stops reading shows up in its Subscription (partials dropped, then cut off) instead
# of megabytes of stale events piling up in socket buffers; transcripts are a few kB/s.
SUBSCRIBER_SEND_BUFFER = 8192


def http_response(status: HTTPStatus, body: bytes, content_type: str, *extra: tuple[str, str]) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), *extra])
    return Response(status.value, status.phrase, headers, body)


def web_file(name: str) -> bytes:
    return resources.files("streamrnn.web").joinpath(name).read_bytes()


def unauthorized(path: str) -> Response:
    """401; a browser asking for the page gets a form for the key instead of a bare refusal."""
    challenge = ("WWW-Authenticate", 'Bearer realm="streamrnn"')
    if path == "/":
        return http_response(HTTPStatus.UNAUTHORIZED, web_file("key.html"), "text/html; charset=utf-8", challenge)
    body = b"this server needs an API key: send the header Authorization: Bearer KEY (or X-API-Key: KEY)\n"
    return http_response(HTTPStatus.UNAUTHORIZED, body, "text/plain", challenge)


def cookie_key(headers: Headers) -> str | None:
    """The key a browser keeps in its cookie, honoured only from this site's own pages
    (no Origin, or Origin equal to Host), so other sites cannot use it (CSWSH)."""
    origin = headers.get("Origin")
    if origin and urlsplit(origin).netloc != headers.get("Host"):
        return None
    try:
        cookie = SimpleCookie(headers.get("Cookie", ""))
    except CookieError:
        return None
    return cookie[COOKIE].value if COOKIE in cookie else None


def first(query: dict[str, list[str]], name: str) -> str | None:
    return query.get(name, [None])[0]


def limit_send_buffer(connection: ServerConnection) -> None:
    connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                              SUBSCRIBER_SEND_BUFFER)
    connection.transport.set_write_buffer_limits(high=SUBSCRIBER_SEND_BUFFER)


def client_message(message: str | bytes) -> ClientMessage:
    """A WebSocket message in the session protocol's terms."""
    if isinstance(message, bytes):
        return ClientMessage("audio", audio=message)
    fields = parse_json(message)
    kind = fields["type"]
    if kind == "config":
        return ClientMessage(kind, options=options_from(fields))
    if kind == "resume":
        return ClientMessage(kind, resume=resume_fields(fields))
    return ClientMessage(kind)


def options_from(message: dict) -> SessionOptions:
    known = {"sample_rate", "encoding", "interim_results", "suggestions", "phrases"}
    unknown = set(message) - known - {"type"}
    if unknown:
        raise ServiceError(ErrorCode.BAD_CONFIG, f"unknown config fields: {', '.join(sorted(unknown))}")
    values = {k: message[k] for k in known if k in message}
    for key, kind in (("sample_rate", int), ("suggestions", int), ("interim_results", bool)):
        if key in values and not is_exactly(values[key], kind):
            raise ServiceError(ErrorCode.BAD_CONFIG,
                               f"config field {key} must be {kind.__name__}, got {values[key]!r}")
    return SessionOptions(**values)


def resume_fields(message: dict) -> tuple[str, str, int]:
    """session_id, resume_token and last_seq (default 0) of a resume message."""
    unknown = set(message) - {"type", "session_id", "resume_token", "last_seq"}
    if unknown:
        raise ServiceError(ErrorCode.BAD_MESSAGE, f"unknown resume fields: {', '.join(sorted(unknown))}")
    fields = message.get("session_id"), message.get("resume_token"), message.get("last_seq", 0)
    if not (isinstance(fields[0], str) and isinstance(fields[1], str) and is_exactly(fields[2], int)
            and fields[2] >= 0):
        raise ServiceError(ErrorCode.BAD_MESSAGE, "resume needs session_id and resume_token (strings) and "
                                                  "last_seq (a whole number, 0 or more)")
    return fields


def is_exactly(value, kind) -> bool:
    """isinstance, except that a JSON true/false is not a number."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def parse_json(text: str) -> dict:
    try:
        message = json.loads(text)
    except json.JSONDecodeError as err:
        raise ServiceError(ErrorCode.BAD_MESSAGE, f"message is not valid JSON: {err}") from err
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ServiceError(ErrorCode.BAD_MESSAGE, 'a text message must be a JSON object with a "type" field')
    return message


class WebSocketServer:
    def __init__(self, service: RecognitionService, require_config: bool = False, keys: KeyCheck | None = None,
                 ssl_context=None, http_api: OpenAIApi | None = None):
        """`http_api`: plain HTTP routes with bodies (the OpenAI-style API) on the same port."""
        self.service = service
        self.http_api = http_api
        self.require_config = require_config
        self.keys = keys or KeyCheck([])
        self.ssl_context = ssl_context

    def serve(self, host: str, port: int, **kwargs):
        # No permessage-deflate: PCM hardly compresses, and deflating every chunk cost the clients and
        # the daemon more CPU than any other part of their network side (BENCHMARKS.md).
        if self.http_api is not None:
            kwargs["create_connection"] = functools.partial(
                SharedPortConnection, http_paths=self.http_api.serves, http_handler=self.http_api.handle,
                tasks=self.http_api.tasks)
        return serve(self.route, host, port, process_request=self.process_request, ssl=self.ssl_context,
                     max_size=self.service.limits.max_message_bytes, compression=None, **kwargs)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if path == "/healthz":
            return http_response(HTTPStatus.OK, b"ok\n", "text/plain")
        refusal = self.check_key(request, path, parse_qs(url.query))
        if refusal:
            return refusal
        if path == "/metrics":
            return http_response(HTTPStatus.OK, telemetry.exposition(), telemetry.CONTENT_TYPE)
        if path in WEB_FILES:
            name, content_type = WEB_FILES[path]
            return http_response(HTTPStatus.OK, web_file(name), content_type)
        if path in ("/v1/recognize", "/v1/suggest", vosk_ws.PATH) or path.startswith("/v1/subscribe/"):
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return http_response(HTTPStatus.UPGRADE_REQUIRED, b"this endpoint speaks WebSocket\n",
                                     "text/plain")
            return None
        return http_response(HTTPStatus.NOT_FOUND, f"no such path: {path}\n".encode(), "text/plain")

    def check_key(self, request: Request, path: str, query: dict) -> Response | None:
        """None when the request may go on; else the 401, or for a browser that brought the key
        in the query, a redirect that keeps it in a cookie and takes it out of the address bar."""
        if not self.keys.required:
            return None
        headers = request.headers
        key = bearer(headers.get("Authorization")) or headers.get("X-API-Key") or first(query, QUERY_KEY)
        if self.keys.valid(key):
            return self.keep_key_in_cookie(path, key) if first(query, QUERY_KEY) and path in WEB_FILES else None
        return None if self.keys.valid(cookie_key(headers)) else unauthorized(path)

    def keep_key_in_cookie(self, path: str, key: str) -> Response:
        cookie = SimpleCookie()
        cookie[COOKIE] = key
        cookie[COOKIE].update({"path": "/", "httponly": True, "samesite": "Strict", "secure": bool(self.ssl_context)})
        return http_response(HTTPStatus.SEE_OTHER, b"", "text/plain", ("Location", path),
                             ("Set-Cookie", cookie[COOKIE].OutputString()))

    async def route(self, connection: ServerConnection) -> None:
        url = urlsplit(connection.request.path)
        try:
            if url.path == "/v1/recognize":
                await self.recognize(connection)
            elif url.path == "/v1/suggest":
                await self.suggest(connection)
            elif url.path == vosk_ws.PATH:
                await vosk_ws.serve_vosk(self.service, connection, self.require_config)
            else:
                token = first(parse_qs(url.query), QUERY_READ_TOKEN) or connection.request.headers.get("X-Read-Token")
                await self.subscribe(connection, url.path.removeprefix("/v1/subscribe/"), token)
        except ConnectionClosed:
            pass

    async def send_error(self, connection: ServerConnection, error: ServiceError) -> None:
        telemetry.ERRORS.labels(error.code).inc()
        await connection.send(json.dumps(error.event()))

    def receiver(self, connection: ServerConnection) -> Receive:
        async def receive() -> ClientMessage:
            return client_message(await connection.recv())
        return receive

    async def recognize(self, connection: ServerConnection) -> None:
        receive = self.receiver(connection)
        try:
            live, outbox, pending_audio = await open_session(self.service, receive, "websocket", self.require_config)
        except ServiceError as err:
            await self.send_error(connection, err)
            await connection.close(1008, err.code)
            return
        log.info("session %s attached (websocket %s)", live.id, connection.remote_address)
        writer = asyncio.create_task(self.write(connection, outbox))
        try:
            await feed_session(self.service, live, outbox, receive, pending_audio, errors_end_session=False)
        except ConnectionClosed:
            pass
        finally:  # without eof: a dropped connection (no close frame) may be resumed
            await self.service.detach(live, outbox, dropped=connection.protocol.close_rcvd is None)
            await writer
            log.info("session %s detached (%d finals so far)", live.id, live.session.finals)

    async def write(self, connection: ServerConnection, outbox: asyncio.Queue) -> None:
        """The session's events to its client, in order, until the session ends or moves on."""
        try:
            while (event := await outbox.get()) is not None:
                await connection.send(json.dumps(event))
            await connection.close()
        except ConnectionClosed:
            pass

    async def subscribe(self, connection: ServerConnection, session_id: str, read_token: str | None) -> None:
        try:
            live, subscription = self.service.subscribe(session_id, read_token)
        except ServiceError as err:
            await self.send_error(connection, err)
            await connection.close(1008, err.code)
            return
        limit_send_buffer(connection)
        telemetry.SUBSCRIBERS_ACTIVE.inc()
        forwarding = asyncio.ensure_future(self.forward(connection, subscription))
        cut = asyncio.ensure_future(subscription.cut.wait())
        try:
            await asyncio.wait([forwarding, cut], return_when=asyncio.FIRST_COMPLETED)
            if subscription.cut.is_set():  # the forwarder may be stuck on a peer that does not read
                forwarding.cancel()
                await self.close_slow(connection, subscription.error()["message"])
            else:
                forwarding.result()
                await connection.close()
        finally:
            forwarding.cancel()
            cut.cancel()
            live.hub.unsubscribe(subscription)
            telemetry.SUBSCRIBERS_ACTIVE.dec()

    async def forward(self, connection: ServerConnection, subscription) -> None:
        while (event := await subscription.get()) is not None:
            await connection.send(json.dumps(event))

    async def close_slow(self, connection: ServerConnection, message: str) -> None:
        """Close code 1008, reason too_slow, queued behind what the peer has not read yet;
        a peer that reads nothing more is dropped after the close timeout."""
        log.info("subscriber %s cut off: %s", connection.remote_address, message)
        try:
            async with asyncio.timeout(connection.close_timeout):
                await connection.close(1008, "too_slow")
        except TimeoutError:
            connection.transport.abort()

    async def suggest(self, connection: ServerConnection) -> None:
        async for message in connection:
            try:
                if isinstance(message, bytes):
                    raise ServiceError(ErrorCode.BAD_MESSAGE, "send text (plain or JSON), not binary")
                request = parse_json(message) if message.lstrip().startswith("{") \
                    else {"type": "suggest", "text": message}
                if not isinstance(request.get("text", ""), str):
                    raise ServiceError(ErrorCode.BAD_MESSAGE, "text must be a string")
                words = await self.service.suggest(request.get("text", ""), request.get("count"))
                await connection.send(json.dumps({"type": "suggestions", "words": words}))
            except ServiceError as err:
                await self.send_error(connection, err)
