"""gRPC transport (package streamrnn.v1), with health checking and reflection."""
from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from streamrnn.serve import telemetry
from streamrnn.serve.auth import KeyCheck, bearer
from streamrnn.serve.connection import ClientMessage, feed_session, open_session
from streamrnn.serve.service import RecognitionService, ServiceError
from streamrnn_client.proto import streamrnn_pb2 as pb
from streamrnn_client.proto import streamrnn_pb2_grpc as pb_grpc
from streamrnn_client.protocol import ErrorCode, SessionOptions

log = logging.getLogger("streamrnn.grpc")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recognizer"].full_name
STATUS = {
    ErrorCode.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorCode.TOO_FAST: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.TOO_SLOW: grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorCode.TOO_LONG: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNKNOWN_SESSION: grpc.StatusCode.NOT_FOUND, ErrorCode.RESUME_EXPIRED: grpc.StatusCode.NOT_FOUND,
    ErrorCode.SESSION_ENDED: grpc.StatusCode.NOT_FOUND, ErrorCode.CONFIG_REQUIRED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.IDLE: grpc.StatusCode.DEADLINE_EXCEEDED, ErrorCode.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.BAD_RESUME_TOKEN: grpc.StatusCode.PERMISSION_DENIED, ErrorCode.ENGINE_FAILED: grpc.StatusCode.INTERNAL}
OPEN_METHODS = "/grpc.health.v1.Health/"  # answers without a key, like /healthz
ENCODINGS = {pb.PCM_S16LE: "pcm_s16le", pb.F32LE: "f32le"}


def options_from(config: pb.RecognitionConfig) -> SessionOptions:
    defaults = SessionOptions()
    return SessionOptions(sample_rate=config.sample_rate or defaults.sample_rate,
                          encoding=ENCODINGS.get(config.encoding, str(config.encoding)),
                          interim_results=(config.interim_results if config.HasField("interim_results")
                                           else defaults.interim_results),
                          suggestions=config.suggestions if config.HasField("suggestions") else None,
                          phrases=list(config.phrases))


def client_message(request: pb.StreamingRecognizeRequest | None) -> ClientMessage | None:
    """A request in the session protocol's terms (None: the request stream ended)."""
    if request is None:
        return None
    kind = request.WhichOneof("request")
    if kind == "config":
        return ClientMessage(kind, options=options_from(request.config))
    if kind == "resume":
        return ClientMessage(kind, resume=(request.resume.session_id, request.resume.resume_token,
                                           request.resume.last_seq))
    return ClientMessage(kind or "nothing", audio=request.audio)


def result(event: dict) -> pb.Result:
    words = [pb.WordInfo(**w) for w in event.get("words", [])]
    return pb.Result(text=event["text"], start=event["start"], end=event["end"], words=words)


def to_proto(event: dict) -> pb.RecognitionEvent:
    kind = event["type"]
    if kind in ("partial", "final"):
        return pb.RecognitionEvent(**{kind: result(event)}, seq=event["seq"])
    if kind == "suggestions":
        return pb.RecognitionEvent(suggestions=pb.Suggestions(words=[pb.Suggestion(**w) for w in event["words"]]),
                                   seq=event["seq"])
    if kind == "session":
        return pb.RecognitionEvent(session=pb.SessionStarted(session_id=event["session_id"],
                                                             read_token=event["read_token"],
                                                             resume_token=event["resume_token"]))
    if kind == "ack":
        return pb.RecognitionEvent(ack=pb.Ack(bytes=event["bytes"]))
    if kind == "resumed":
        return pb.RecognitionEvent(resumed=pb.SessionResumed(session_id=event["session_id"], ack=event["ack"],
                                                             last_seq=event["last_seq"]))
    return pb.RecognitionEvent(end=pb.SessionEnded(session_id=event["session_id"], reason=event["reason"]),
                               seq=event["seq"])


async def abort(context, error: ServiceError):
    telemetry.ERRORS.labels(error.code).inc()
    await context.abort(STATUS.get(error.code, grpc.StatusCode.INVALID_ARGUMENT), error.message)


class KeyInterceptor(grpc.aio.ServerInterceptor):
    """With API keys configured, every method but health checks needs metadata
    `authorization: Bearer KEY` (or `x-api-key: KEY`); else UNAUTHENTICATED."""

    def __init__(self, keys: KeyCheck):
        self.keys = keys

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        key = bearer(metadata.get("authorization")) or metadata.get("x-api-key")
        if handler is None or details.method.startswith(OPEN_METHODS) or self.keys.valid(key):
            return handler
        return refusal(handler)


def refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    async def refuse(request, context):
        telemetry.ERRORS.labels(ErrorCode.UNAUTHENTICATED).inc()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "this server needs an API key: send metadata authorization: Bearer KEY")
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[handler.request_streaming, handler.response_streaming]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class RecognizerServicer(pb_grpc.RecognizerServicer):
    def __init__(self, service: RecognitionService, require_config: bool = False):
        self.service = service
        self.require_config = require_config

    async def StreamingRecognize(self, requests, context):
        """Requests are read by their own task, so that the responses also flow when the client
        sends nothing (a server shutdown finishes the session; a resume replays finals)."""
        async def receive() -> ClientMessage | None:
            return client_message(await anext(requests, None))
        try:
            live, outbox, pending_audio = await open_session(self.service, receive, "grpc", self.require_config)
        except ServiceError as err:
            await abort(context, err)
        log.info("session %s attached (grpc %s)", live.id, context.peer())
        reader = asyncio.create_task(feed_session(self.service, live, outbox, receive, pending_audio,
                                                  errors_end_session=True))
        try:
            while (event := await outbox.get()) is not None:
                yield to_proto(event)
        finally:
            if not reader.done():
                reader.cancel()
            await self.service.detach(live, outbox)  # the client left without eof: it may resume
            log.info("session %s detached (%d finals so far)", live.id, live.session.finals)
        error = reader.result() if reader.done() and not reader.cancelled() else None
        if error is not None:
            await abort(context, error)
        if live.handed_over:  # UNAVAILABLE: the resuming client carries on on another replica
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"this replica is shutting down: resume session "
                                                             f"{live.id} (another replica has it)")

    async def Recognize(self, request, context):
        if not request.audio:
            await abort(context, ServiceError(ErrorCode.BAD_AUDIO, "no audio in the request"))
        try:
            events = await self.service.recognize(options_from(request.config), request.audio)
        except ServiceError as err:
            await abort(context, err)
        finals = [result(e) for e in events if e["type"] == "final"]
        return pb.RecognizeResponse(results=finals, text=" ".join(r.text for r in finals))

    async def Subscribe(self, request, context):
        try:
            live, subscription = self.service.subscribe(request.session_id, request.read_token)
        except ServiceError as err:
            await abort(context, err)
        telemetry.SUBSCRIBERS_ACTIVE.inc()
        try:
            while (event := await subscription.get()) is not None:
                if event["type"] == "error":  # cut off for being too slow
                    await context.abort(STATUS[event["code"]], event["message"])
                yield to_proto(event)
        finally:
            live.hub.unsubscribe(subscription)
            telemetry.SUBSCRIBERS_ACTIVE.dec()

    async def Suggest(self, request, context):
        try:
            words = await self.service.suggest(request.text, request.count or None)
        except ServiceError as err:
            await abort(context, err)
        return pb.SuggestResponse(words=[pb.Suggestion(**w) for w in words])

    async def Score(self, request, context):
        try:
            scored = await self.service.score(request.text)
        except ServiceError as err:
            await abort(context, err)
        return pb.ScoreResponse(**scored)


async def start_grpc(service: RecognitionService, address: str, require_config: bool = False,
                     credentials: grpc.ServerCredentials | None = None, keys: KeyCheck | None = None
                     ) -> grpc.aio.Server:
    server = grpc.aio.server(interceptors=[KeyInterceptor(keys or KeyCheck([]))],
                             # no SO_REUSEPORT: a second daemon on the same port must fail, not share it
                             options=[("grpc.max_receive_message_length", service.limits.grpc_max_message_bytes),
                                      ("grpc.so_reuseport", 0)])
    pb_grpc.add_RecognizerServicer_to_server(RecognizerServicer(service, require_config), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection([SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME], server)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}: the address is in use, or not this machine's")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.bound_port = port
    return server
