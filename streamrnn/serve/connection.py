"""The session protocol that every transport speaks: what a client may send, in which order, and
what the daemon does with it. A transport only turns its wire messages into `ClientMessage`s and
the session's events into its wire format; a session behaves the same over each of them."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streamrnn.serve import telemetry
from streamrnn.serve.service import LiveSession, RecognitionService, ServiceError
from streamrnn_client.protocol import EndReason, ErrorCode, SessionOptions

# A request stream that ends without eof may be a cut connection (gRPC shows both alike): a
# resume on a new connection gets this long to take the session over before it is finished.
END_WITHOUT_EOF_GRACE_S = 1.0


@dataclass
class ClientMessage:
    kind: str  # "config", "resume", "audio" or "eof"
    options: SessionOptions | None = None  # config
    resume: tuple[str, str, int] | None = None  # resume: session id, resume token, last seq
    audio: bytes = b""  # audio


# The next message of the client; None when its stream ended without eof. Raises ServiceError for
# a message that cannot be read.
Receive = Callable[[], Awaitable[ClientMessage | None]]


async def open_session(service: RecognitionService, receive: Receive, transport: str,
                       require_config: bool) -> tuple[LiveSession, asyncio.Queue, bytes]:
    """A new session from a first config message (or with the default options if audio comes
    first), or a dropped one from a first resume message; with its client attached. Also the
    audio of a first audio message, still to be fed."""
    try:
        first = await asyncio.wait_for(receive(), service.idle_timeout)
    except TimeoutError:
        raise ServiceError(ErrorCode.IDLE, f"no config or audio came in {service.idle_timeout:g} s") from None
    kind = first.kind if first is not None else "nothing"
    if kind == "resume":
        return *await service.resume(*first.resume), b""
    if kind == "config":
        return *await service.start(first.options, transport), b""
    if kind == "audio" and not require_config:
        return *await service.start(SessionOptions(), transport), first.audio
    raise ServiceError(ErrorCode.CONFIG_REQUIRED, f"the first message must be a config, got {kind}")


async def feed_session(service: RecognitionService, live: LiveSession, outbox: asyncio.Queue, receive: Receive,
                       pending_audio: bytes, errors_end_session: bool) -> ServiceError | None:
    """The client's audio to the session until eof, idleness, or the end of its stream; then the
    session's last final and `end`, unless it ended otherwise (a limit, a shutdown) or moved to
    another connection. A bad message is sent to the client as an error event and the session
    goes on; with `errors_end_session` (a transport that can only report an error by ending the
    call) it finishes the session instead and is returned."""
    reason = EndReason.EOF
    message = ClientMessage("audio", audio=pending_audio) if pending_audio else None
    while live.outbox is outbox:
        try:
            if message is None:
                message = await asyncio.wait_for(receive(), service.idle_timeout)
            if message is None:
                await asyncio.sleep(END_WITHOUT_EOF_GRACE_S)
                break
            if message.kind == "eof":
                break
            if message.kind != "audio":
                raise ServiceError(ErrorCode.BAD_MESSAGE, f"expected audio or eof, got {message.kind}")
            await service.feed(live, message.audio, outbox)
        except TimeoutError:
            reason = EndReason.IDLE
            break
        except ServiceError as err:
            if errors_end_session:
                return await end_on_error(service, live, outbox, err)
            telemetry.ERRORS.labels(err.code).inc()
            outbox.put_nowait(err.event())
        message = None
    if live.outbox is outbox:
        await service.finish(live, reason, outbox)
    return None


async def end_on_error(service: RecognitionService, live: LiveSession, outbox: asyncio.Queue,
                       error: ServiceError) -> ServiceError | None:
    if live.outbox is outbox:
        await service.finish(live, EndReason.EOF, outbox)
    elif live.ended and error.code == ErrorCode.SESSION_MOVED:
        return None  # the server ended it (a shutdown, a limit) while this message came in
    return error
