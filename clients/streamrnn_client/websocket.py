"""The asyncio client of a streamrnn daemon's WebSocket API.

    async for event in stream_audio("ws://127.0.0.1:8080", chunks, sample_rate=16000):
        print(event)

Every call takes `api_key` (when the daemon has keys configured) and, for wss:// URLs,
`ssl` (an ssl.SSLContext, e.g. from streamrnn_client.tls.client_context(ca="cert.pem")).
"""
from __future__ import annotations

import asyncio
import json
import socket
import ssl as ssl_module
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidMessage, InvalidStatus

from streamrnn_client.protocol import EventType, SessionOptions, StreamrnnError
from streamrnn_client.resume import ResumeState

RECOGNIZE, SUGGEST = "/v1/recognize", "/v1/suggest"
POLICY_VIOLATION = 1008  # the close code of a subscription the server cut off
HANDSHAKE_TRIES = 3  # a new session gives up after this many failed WebSocket handshakes in a row
# What a load balancer answers while it has no server to pass a connection to (all of them dead or
# restarting, for a moment): worth trying again, for a new session as for a resume.
PROXY_UNAVAILABLE = (502, 503, 504)


class ServerError(StreamrnnError):
    """An error event from the server (the gRPC client raises grpc.RpcError instead)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


async def _aiter(chunks):
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


def open_socket(url: str, path: str, api_key: str | None = None, ssl=None, headers: dict | None = None):
    """A WebSocket to `path` on the daemon at `url`, with the key as a bearer header."""
    headers = dict(headers or {})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return connect(url.rstrip("/") + path, additional_headers=headers, ssl=ssl, max_size=None, compression=None)


def unreachable(err: Exception) -> bool:
    """No daemon at the address, or one whose certificate is not trusted (as opposed to a
    connection cut on the way)."""
    return isinstance(err, (ConnectionRefusedError, socket.gaierror, ssl_module.SSLCertVerificationError))


class ResumingStream:
    """One recognition session over WebSocket that survives dropped connections: it reconnects,
    resumes the session (the server says how much audio it has), sends the rest again and
    passes on every event once (events carry a sequence number)."""

    def __init__(self, url: str, chunks, config: dict, reconnect_for: float = 30.0, api_key: str | None = None,
                 ssl=None):
        self.url, self.api_key, self.ssl = url, api_key, ssl
        self.source, self.config = chunks, config
        self.state = ResumeState(reconnect_for)
        self.grown = asyncio.Event()  # set when the buffer grows or the source ends
        self.handshakes_failed = 0

    @property
    def resumes(self) -> int:
        return self.state.resumes

    async def events(self) -> AsyncIterator[dict]:
        reader = asyncio.create_task(self.read_source())
        try:
            while True:
                try:
                    async with aclosing(self.connection()) as events:  # the socket closes at `end`
                        async for event in events:
                            yield event
                            if event["type"] == EventType.END:
                                return
                    if not self.state.has_session:  # refused at the start: the error was passed on
                        return
                    lost = ConnectionError("the server closed the connection before the session ended")
                except (ConnectionClosed, InvalidMessage, InvalidStatus, OSError) as err:
                    lost = err
                await asyncio.sleep(self.state.retry_delay(lost, self.retryable(lost)))
        finally:
            reader.cancel()

    def retryable(self, err: Exception) -> bool:
        """A session under way is resumed after any lost connection; a new one is not started
        again when there is no daemon there, or no WebSocket server (handshakes keep failing). A
        refused handshake is tried again only when a load balancer had no server for it."""
        if isinstance(err, InvalidStatus):
            return err.response.status_code in PROXY_UNAVAILABLE
        if self.state.has_session:
            return True
        self.handshakes_failed = self.handshakes_failed + 1 if isinstance(err, InvalidMessage) else 0
        return not unreachable(err) and self.handshakes_failed < HANDSHAKE_TRIES

    async def read_source(self) -> None:
        """The audio source is read apart from any connection, so nothing is lost while away."""
        async for chunk in _aiter(self.source):
            self.state.buffer.add(chunk)
            self.grown.set()
        self.state.source_done = True
        self.grown.set()

    async def connection(self) -> AsyncIterator[dict]:
        """One connection: start or resume, send audio, yield events not yielded before."""
        async with open_socket(self.url, RECOGNIZE, self.api_key, self.ssl) as ws:
            resuming = self.state.has_session
            if resuming:
                await ws.send(json.dumps({"type": "resume", **self.state.resume_request()}))
            else:
                await ws.send(json.dumps(self.config))
            sender = None
            try:
                async for message in ws:
                    event = json.loads(message)
                    if event["type"] in (EventType.SESSION, EventType.RESUMED):
                        sender = asyncio.create_task(self.send_audio(ws, self.started(event)))
                    elif event["type"] == EventType.ACK:
                        self.state.buffer.acknowledge(event["bytes"])
                        continue
                    elif event["type"] == EventType.ERROR and sender is None and resuming:
                        raise ServerError(event["code"], event["message"])
                    if self.state.is_new(event.get("seq")):  # else: had it before the connection dropped
                        yield event
            finally:
                if sender is not None:
                    sender.cancel()

    def started(self, event: dict) -> int:
        """Where to start sending audio, from a `session` or `resumed` event."""
        if event["type"] == EventType.SESSION:
            return self.state.session_started(event["session_id"], event["resume_token"])
        return self.state.resumed(event["ack"])

    async def send_audio(self, ws, offset: int) -> None:
        while (chunk := self.state.pending(offset)) is not None:
            if chunk:
                await ws.send(chunk)
                offset += len(chunk)
            else:
                self.grown.clear()
                await self.grown.wait()
        await ws.send(json.dumps({"type": "eof"}))


async def stream_audio(url: str, chunks: Iterable[bytes] | AsyncIterable[bytes], raise_errors: bool = True,
                       reconnect_for: float = 30.0, api_key: str | None = None, ssl=None,
                       **options) -> AsyncIterator[dict]:
    """Send audio chunks to /v1/recognize; yield every event until `end`. `options` are the
    session's (protocol.SessionOptions: sample_rate, encoding, interim_results, suggestions,
    phrases). A dropped connection is resumed (for up to `reconnect_for` seconds of trying; 0:
    never) with no event lost or repeated; a `resumed` event marks each resumption."""
    stream = ResumingStream(url, chunks, SessionOptions(**options).config_message(), reconnect_for, api_key, ssl)
    async for event in stream.events():
        if event["type"] == EventType.ERROR and raise_errors:
            raise ServerError(event["code"], event["message"])
        yield event


async def subscribe(url: str, session_id: str, read_token: str, api_key: str | None = None,
                    ssl=None) -> AsyncIterator[dict]:
    """The live events of a session (its `session` event gives the read token), until its end.
    A subscriber that reads too slowly is cut off: ServerError too_slow."""
    async with open_socket(url, f"/v1/subscribe/{session_id}", api_key, ssl, {"X-Read-Token": read_token}) as ws:
        try:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == EventType.ERROR:
                    raise ServerError(event["code"], event["message"])
                yield event
        except ConnectionClosedError as err:
            if err.rcvd is None or err.rcvd.code != POLICY_VIOLATION:
                raise
            raise ServerError(err.rcvd.reason, "the server closed the subscription") from err


async def suggest(url: str, text: str, count: int | None = None, api_key: str | None = None,
                  ssl=None) -> list[dict]:
    async with open_socket(url, SUGGEST, api_key, ssl) as ws:
        request = {"type": "suggest", "text": text, **({"count": count} if count else {})}
        await ws.send(json.dumps(request))
        event = json.loads(await ws.recv())
        if event["type"] == EventType.ERROR:
            raise ServerError(event["code"], event["message"])
        return event["words"]
