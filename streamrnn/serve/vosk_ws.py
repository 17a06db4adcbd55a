"""Vosk server's WebSocket protocol on /vosk, for the clients written for it.

The client may send {"config": {"sample_rate": 16000, "words": true, "phrase_list": [...]}} first,
then binary 16-bit mono PCM, then {"eof": 1}. Every audio message gets exactly one answer, as from
Vosk: {"partial": "..."} or, when an utterance ended in it, {"text": "...", "result": [{"word",
"start", "end", "conf"}]}; eof gets the last {"text", "result"} and the connection closes. A bad
message (Vosk's protocol has no error message) gets the last result as its answer, then the
connection closes with code 1008 and a reason naming the problem. All else is the session
protocol of connection.py: the same session, limits and metrics as /v1/recognize."""
from __future__ import annotations

import asyncio
import json
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamrnn.serve import telemetry
from streamrnn.serve.connection import ClientMessage, feed_session, open_session
from streamrnn.serve.service import RecognitionService, ServiceError
from streamrnn_client.protocol import ErrorCode, SessionOptions

log = logging.getLogger("streamrnn.vosk")
PATH = "/vosk"
CONFIG_FIELDS = {"sample_rate", "words", "phrase_list", "max_alternatives"}
ANSWER = {"type": "vosk-answer"}  # put in the outbox after each audio message's events: answer them
POLICY_VIOLATION = 1008
MAX_CLOSE_REASON = 123  # bytes, WebSocket's limit


class VoskConnection:
    def __init__(self, connection: ServerConnection):
        self.connection = connection
        self.words = True  # Vosk's "words" config: word times in results
        self.partial = ""  # the answer to audio that ended no utterance
        self.outbox: asyncio.Queue | None = None
        self.answer_due = False

    async def receive(self) -> ClientMessage:
        """The client's next message; the audio message before it is answered first (its events
        are all in the outbox once the session protocol asks for the next message)."""
        if self.answer_due and self.outbox is not None:
            self.outbox.put_nowait(ANSWER)
        message = self.parse(await self.connection.recv())
        self.answer_due = message.kind == "audio"
        return message

    def parse(self, message: str | bytes) -> ClientMessage:
        if isinstance(message, bytes):
            return ClientMessage("audio", audio=message)
        try:
            fields = json.loads(message)
        except json.JSONDecodeError as err:
            raise ServiceError(ErrorCode.BAD_MESSAGE, f"message is not valid JSON: {err}") from err
        if isinstance(fields, dict) and isinstance(fields.get("config"), dict) and len(fields) == 1:
            return ClientMessage("config", options=self.options(fields["config"]))
        if isinstance(fields, dict) and fields.get("eof") == 1:
            return ClientMessage("eof")
        raise ServiceError(ErrorCode.BAD_MESSAGE, 'expected {"config": {...}}, binary audio or {"eof": 1}')

    def options(self, config: dict) -> SessionOptions:
        unknown = set(config) - CONFIG_FIELDS
        if unknown:
            raise ServiceError(ErrorCode.BAD_CONFIG, f"unknown config fields: {', '.join(sorted(unknown))}")
        rate = config.get("sample_rate", SessionOptions.sample_rate)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate != int(rate):
            raise ServiceError(ErrorCode.BAD_CONFIG, f"sample_rate must be a whole number, got {rate!r}")
        if config.get("max_alternatives", 0) != 0:
            raise ServiceError(ErrorCode.BAD_CONFIG, "max_alternatives must be 0: this server gives one result")
        self.words = bool(config.get("words", True))
        return SessionOptions(sample_rate=int(rate), encoding="pcm_s16le", interim_results=True, suggestions=0,
                              phrases=config.get("phrase_list", []))

    async def write(self, outbox: asyncio.Queue) -> None:
        """The session's events as Vosk's answers, until the session ends: then its last result."""
        events = []
        try:
            while (event := await outbox.get()) is not None:
                if event is ANSWER:
                    await self.connection.send(json.dumps(self.answer(events)))
                    events = []
                else:
                    events.append(event)
            await self.connection.send(json.dumps(self.result([e for e in events if e["type"] == "final"])))
        except ConnectionClosed:
            pass

    def answer(self, events: list[dict]) -> dict:
        finals = [e for e in events if e["type"] == "final"]
        after = events[events.index(finals[-1]) + 1:] if finals else events
        partials = [e for e in after if e["type"] == "partial"]
        if finals:
            self.partial = partials[-1]["text"] if partials else ""
            return self.result(finals)
        if partials:
            self.partial = partials[-1]["text"]
        return {"partial": self.partial}

    def result(self, finals: list[dict]) -> dict:
        result = {"text": " ".join(e["text"] for e in finals if e["text"])}
        words = [{"word": w["word"], "start": w["start"], "end": w["end"], "conf": w["conf"]}
                 for e in finals for w in e["words"]]
        if self.words and words:
            result["result"] = words
        return result


async def serve_vosk(service: RecognitionService, connection: ServerConnection, require_config: bool) -> None:
    vosk = VoskConnection(connection)
    try:
        live, outbox, pending_audio = await open_session(service, vosk.receive, "vosk", require_config)
    except ServiceError as err:
        await close_on_error(connection, err)
        return
    vosk.outbox = outbox
    log.info("session %s attached (vosk %s)", live.id, connection.remote_address)
    writer = asyncio.create_task(vosk.write(outbox))
    error = None
    try:
        error = await feed_session(service, live, outbox, vosk.receive, pending_audio, errors_end_session=True)
    except ConnectionClosed:
        pass
    finally:
        await service.detach(live, outbox, dropped=False)  # Vosk's protocol has no resume
        await writer
    if error is not None:
        await close_on_error(connection, error)
    await connection.close()


async def close_on_error(connection: ServerConnection, error: ServiceError) -> None:
    telemetry.ERRORS.labels(error.code).inc()
    reason = f"{error.code}: {error.message}".encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
    await connection.close(POLICY_VIOLATION, reason)
