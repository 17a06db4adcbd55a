"""Plain HTTP requests with a body, or with a streamed answer, on the WebSocket port.

websockets reads only bodiless GET handshakes and answers each with one whole response, so a
connection whose request line names one of the `http_paths` is taken over before websockets sees
it and served here with h11 (one request per connection); every other connection goes on to
websockets untouched."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus

import h11
from websockets.asyncio.server import ServerConnection

MAX_REQUEST_LINE = 8192  # longer: not ours; websockets refuses it
HEAD_TIMEOUT_S = 10.0  # websockets' own open_timeout, for the request line before it takes over
LINGER_S = 2.0  # after an early answer (401, 413), unread body is taken and dropped this long,
# so that a client still sending sees the answer instead of a reset connection


class BodyTooLarge(Exception):
    pass


class HttpExchange:
    """One HTTP request and its answer over a taken-over connection."""

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self.h11 = h11.Connection(h11.SERVER)
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()  # b"": the client closed its side
        self.closed = False  # the connection is gone

    def feed(self, data: bytes) -> None:
        self.incoming.put_nowait(data)

    def lost(self) -> None:
        self.closed = True
        self.incoming.put_nowait(b"")

    async def next_event(self):
        """The next h11 event of the request; a client that waits for `100 Continue` gets it here,
        when its body is asked for."""
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            if self.h11.they_are_waiting_for_100_continue:
                self.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
            self.h11.receive_data(await self.incoming.get())
        return event

    async def body(self, limit: int) -> AsyncIterator[bytes]:
        """The request body as it arrives; BodyTooLarge past `limit` bytes."""
        size = 0
        while isinstance(event := await self.next_event(), h11.Data):
            size += len(event.data)
            if size > limit:
                raise BodyTooLarge(f"more than {limit} bytes")
            yield event.data
        if not isinstance(event, h11.EndOfMessage):
            raise ConnectionError("the client closed the connection before the end of its request")

    def send(self, event) -> None:
        """An h11 event to the client (nothing once the connection is gone)."""
        if not self.closed and not self.transport.is_closing():
            self.transport.write(self.h11.send(event))

    def respond(self, status: int, body: bytes, content_type: str, *extra: tuple[str, str]) -> None:
        self.start(status, content_type, ("Content-Length", str(len(body))), *extra)
        self.send(h11.Data(data=body))
        self.send(h11.EndOfMessage())

    def start(self, status: int, content_type: str, *extra: tuple[str, str]) -> None:
        """The answer's head; without a Content-Length its body is sent chunked (a stream)."""
        headers = [("Content-Type", content_type), ("Cache-Control", "no-store"), ("Connection", "close"), *extra]
        self.send(h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase))

    async def close(self) -> None:
        """Close once answered; a client still sending its body gets LINGER_S to finish or stop."""
        if self.closed:
            return
        if self.h11.their_state not in (h11.DONE, h11.CLOSED, h11.ERROR) and self.transport.can_write_eof():
            self.transport.write_eof()
            try:
                async with asyncio.timeout(LINGER_S):
                    while await self.incoming.get():
                        pass
            except TimeoutError:
                pass
        self.transport.close()


Handler = Callable[[HttpExchange], Awaitable[None]]


class SharedPortConnection(ServerConnection):
    """A connection on the WebSocket port: handed to websockets, unless its request line asks for
    one of `http_paths`; then `http_handler` serves it (see the module's doc)."""

    def __init__(self, *args, http_paths: Callable[[str], bool], http_handler: Handler, tasks: set, **kwargs):
        super().__init__(*args, **kwargs)
        self.http_paths, self.http_handler, self.http_tasks = http_paths, http_handler, tasks
        self.head = bytearray()
        self.exchange: HttpExchange | None = None
        self.handed_on = False  # to websockets
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw_transport = transport
        self.head_timer = self.loop.call_later(HEAD_TIMEOUT_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.feed(data)
        elif self.handed_on:
            super().data_received(data)
        else:
            self.head += data
            line_end = self.head.find(b"\n")
            if line_end >= 0 or len(self.head) > MAX_REQUEST_LINE:
                self.decide(bytes(self.head[:max(line_end, 0)]))

    def decide(self, request_line: bytes) -> None:
        self.head_timer.cancel()
        head, self.head = bytes(self.head), bytearray()
        parts = request_line.split(b" ")
        path = parts[1].split(b"?")[0].decode("latin-1") if len(parts) == 3 else ""
        if path and self.http_paths(path):
            self.exchange = HttpExchange(self.raw_transport)
            self.exchange.feed(head)
            task = self.loop.create_task(self.serve_http(self.exchange))
            self.http_tasks.add(task)
            task.add_done_callback(self.http_tasks.discard)
        else:
            self.handed_on = True
            super().connection_made(self.raw_transport)
            super().data_received(head)

    async def serve_http(self, exchange: HttpExchange) -> None:
        try:
            await self.http_handler(exchange)
        finally:
            await exchange.close()

    def eof_received(self) -> bool | None:
        if self.exchange is not None:
            self.exchange.feed(b"")
            return True  # keep the connection to answer on
        return super().eof_received() if self.handed_on else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        if self.exchange is not None:
            self.exchange.lost()
        elif self.handed_on:
            super().connection_lost(exc)
