"""Home Assistant's Wyoming protocol on a port of its own ([wyoming]), with the `wyoming` package.

describe -> info (one asr program, its model, English); transcribe (optional: language, names and
terms to bias towards), audio-start, audio-chunk..., audio-stop -> transcript-start, a
transcript-chunk per utterance, transcript (the whole text, for clients without streaming) and
transcript-stop. The events become the session protocol's messages (audio-start a config,
audio-chunk audio, audio-stop eof) for connection.py, so a session here is the same session as
on /v1/recognize. A bad event gets an `error` event (text and code); the rest of that request, up
to its audio-stop, is let go, and the connection goes on."""
from __future__ import annotations

import asyncio
import logging

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.server import AsyncEventHandler

from streamrnn import __version__
from streamrnn.serve import telemetry
from streamrnn.serve.connection import ClientMessage, feed_session, open_session
from streamrnn.serve.service import RecognitionService, ServiceError
from streamrnn_client.protocol import ErrorCode, SessionOptions

log = logging.getLogger("streamrnn.wyoming")
LANGUAGE = "en"
ENCODINGS = {2: "pcm_s16le"}  # audio-start width (bytes a sample) -> encoding
QUEUED_MESSAGES = 16  # audio chunks waiting for the engine; past it the client is read no further
ATTRIBUTION = Attribution(name="streamrnn", url="https://github.com/streamrnn/streamrnn")


def info() -> Info:
    model = AsrModel(name="streamrnn", description="LSTM CTC acoustic model, word n-gram and LSTM language models",
                     attribution=ATTRIBUTION, installed=True, version=__version__, languages=[LANGUAGE])
    return Info(asr=[AsrProgram(name="streamrnn", description="streamrnn streaming speech recognizer",
                                attribution=ATTRIBUTION, installed=True, version=__version__, models=[model],
                                supports_transcript_streaming=True)])


def options_from(start: AudioStart, request: Transcribe | None) -> SessionOptions:
    if start.channels != 1:
        raise ServiceError(ErrorCode.BAD_CONFIG, f"audio must be mono (channels 1), got channels {start.channels}")
    if start.width not in ENCODINGS:
        raise ServiceError(ErrorCode.BAD_CONFIG, f"audio must be 16-bit (width 2), got width {start.width}")
    phrases = [*(request.transcript_names or []), *(request.transcript_terms or [])] if request else []
    return SessionOptions(sample_rate=start.rate, encoding=ENCODINGS[start.width], interim_results=False,
                          suggestions=0, phrases=phrases)


class WyomingHandler(AsyncEventHandler):
    """One client connection; its sessions one after another (one per audio-start)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: RecognitionService):
        super().__init__(reader, writer)
        self.service = service
        self.request: Transcribe | None = None
        self.messages: asyncio.Queue[ClientMessage] | None = None  # to the running session
        self.session: asyncio.Task | None = None  # from audio-start to audio-stop
        self.failed = False  # the request went wrong: its events up to audio-stop are let go

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(info().event())
        elif Transcribe.is_type(event.type):
            self.request = Transcribe.from_event(event)
            language = self.request.language
            if language and language.split("-")[0].lower() != LANGUAGE:
                await self.fail(ServiceError(ErrorCode.BAD_CONFIG, f"this server transcribes English ({LANGUAGE}) "
                                                                   f"only, not {language!r}"))
        elif self.failed:  # the rest of a failed request, up to its audio-stop, is let go
            if AudioStop.is_type(event.type):
                self.session, self.failed = None, False
        elif AudioStart.is_type(event.type):
            await self.start(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type) or AudioStop.is_type(event.type):
            await self.audio(event)
        return True  # other events (ping, ...) are not for a speech-to-text server

    async def audio(self, event: Event) -> None:
        if self.session is None:
            await self.fail(ServiceError(ErrorCode.BAD_MESSAGE, f"{event.type} before audio-start"))
            self.failed = not AudioStop.is_type(event.type)
        elif AudioChunk.is_type(event.type):
            await self.deliver(ClientMessage("audio", audio=AudioChunk.from_event(event).audio))
        else:
            await self.deliver(ClientMessage("eof"))
            await self.session
            self.session, self.failed = None, False

    async def deliver(self, message: ClientMessage) -> None:
        """To the session, once it has room (the client is read no further meanwhile), unless it
        has ended (by a limit, an error or a shutdown: the rest of its audio has no session)."""
        put = asyncio.ensure_future(self.messages.put(message))
        await asyncio.wait([put, self.session], return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    async def start(self, start: AudioStart) -> None:
        if self.session is not None:
            await self.fail(ServiceError(ErrorCode.BAD_MESSAGE, "audio-start before the last audio-stop"))
            return
        try:
            options = options_from(start, self.request)
        except ServiceError as err:
            await self.fail(err)
            return
        self.messages = asyncio.Queue(QUEUED_MESSAGES)
        self.messages.put_nowait(ClientMessage("config", options=options))
        self.session = asyncio.create_task(self.run_session(self.messages))

    async def run_session(self, messages: asyncio.Queue) -> None:
        try:
            live, outbox, _ = await open_session(self.service, messages.get, "wyoming", require_config=True)
        except ServiceError as err:
            await self.fail(err)
            return
        log.info("session %s attached (wyoming)", live.id)
        writer = asyncio.create_task(self.write_transcript(outbox))
        try:
            error = await feed_session(self.service, live, outbox, messages.get, b"", errors_end_session=True)
        finally:
            await self.service.detach(live, outbox, dropped=False)
        text = await writer
        if error is not None:
            await self.fail(error)
            return
        await self.write_event(Transcript(text=text, language=LANGUAGE).event())
        await self.write_event(TranscriptStop().event())

    async def write_transcript(self, outbox: asyncio.Queue) -> str:
        """transcript-start, then a transcript-chunk for each final (the chunks add up to the
        text); the whole text once the session ends."""
        texts = []
        await self.write_event(TranscriptStart(language=LANGUAGE).event())
        while (event := await outbox.get()) is not None:
            if event["type"] == "final" and event["text"]:
                await self.write_event(TranscriptChunk(text=" " * bool(texts) + event["text"]).event())
                texts.append(event["text"])
        return " ".join(texts)

    async def fail(self, error: ServiceError) -> None:
        """Tell the client what was wrong with its request; the rest of the request is let go."""
        telemetry.ERRORS.labels(error.code).inc()
        self.failed = True
        await self.write_event(Error(text=error.message, code=error.code).event())

    async def disconnect(self) -> None:
        """The client went away: a session still running ends (its final goes to subscribers)."""
        if self.session is not None and not self.session.done():
            self.session.cancel()  # its session is detached, and so finished (reason disconnect)
            await asyncio.gather(self.session, return_exceptions=True)


class WyomingServer:
    """A TCP server whose connections each get a WyomingHandler."""

    def __init__(self, service: RecognitionService):
        self.service = service
        self.handlers: dict[asyncio.Task, WyomingHandler] = {}
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound."""
        try:
            self.server = await asyncio.start_server(self.connected, host, port)
        except OSError as err:
            raise OSError(f"cannot listen for Wyoming on {host}:{port}: {err.strerror or err}") from err
        return self.server.sockets[0].getsockname()[1]

    async def connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.handlers[task] = handler = WyomingHandler(reader, writer, self.service)
        try:
            await handler.run()
        except ConnectionError:
            pass
        finally:
            self.handlers.pop(task, None)

    def close(self) -> None:
        """No new connections; the open ones go on."""
        self.server.close()

    async def drain(self) -> None:
        """After the service's drain: every session's transcript out, then every connection closed."""
        handlers = list(self.handlers.values())
        await asyncio.gather(*(h.session for h in handlers if h.session is not None), return_exceptions=True)
        for handler in handlers:
            await handler.stop()
        await asyncio.gather(*self.handlers, return_exceptions=True)
