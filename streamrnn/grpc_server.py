"""gRPC transport (package streamrnn.v1), with health checking and reflection."""
from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from . import telemetry
from .auth import KeyCheck, bearer
from .engine import SessionOptions
from .proto import streamrnn_pb2 as pb
from .proto import streamrnn_pb2_grpc as pb_grpc
from .service import RecognitionService, ServiceError

log = logging.getLogger("streamrnn.grpc")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recognizer"].full_name
STATUS = {"busy": grpc.StatusCode.RESOURCE_EXHAUSTED, "too_fast": grpc.StatusCode.RESOURCE_EXHAUSTED,
          "too_slow": grpc.StatusCode.RESOURCE_EXHAUSTED, "unknown_session": grpc.StatusCode.NOT_FOUND,
          "config_required": grpc.StatusCode.FAILED_PRECONDITION, "idle": grpc.StatusCode.DEADLINE_EXCEEDED}
OPEN_METHODS = "/grpc.health.v1.Health/"  # answers without a key, like /healthz
ENCODINGS = {pb.PCM_S16LE: "pcm_s16le", pb.F32LE: "f32le"}


def options_from(config: pb.RecognitionConfig) -> SessionOptions:
    return SessionOptions(sample_rate=config.sample_rate or 16000,
                          encoding=ENCODINGS.get(config.encoding, str(config.encoding)),
                          interim_results=config.interim_results,
                          suggestions=config.suggestions if config.HasField("suggestions") else None,
                          phrases=list(config.phrases))


def result(event: dict) -> pb.Result:
    words = [pb.WordInfo(**w) for w in event.get("words", [])]
    return pb.Result(text=event["text"], start=event["start"], end=event["end"], words=words)


def to_proto(event: dict) -> pb.RecognitionEvent:
    kind = event["type"]
    if kind in ("partial", "final"):
        return pb.RecognitionEvent(**{kind: result(event)})
    if kind == "suggestions":
        return pb.RecognitionEvent(suggestions=pb.Suggestions(words=[pb.Suggestion(**w) for w in event["words"]]))
    if kind == "session":
        return pb.RecognitionEvent(session=pb.SessionStarted(session_id=event["session_id"],
                                                             read_token=event["read_token"]))
    return pb.RecognitionEvent(end=pb.SessionEnded(session_id=event["session_id"], reason=event["reason"]))


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
        telemetry.ERRORS.labels("unauthenticated").inc()
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

    async def open_session(self, requests):
        try:
            first = await asyncio.wait_for(anext(requests, None), self.service.idle_timeout)
        except TimeoutError:
            raise ServiceError("idle", f"no config or audio came in {self.service.idle_timeout:g} s") from None
        if first is None or first.WhichOneof("request") != "config":
            if self.require_config or first is None or first.WhichOneof("request") == "eof":
                raise ServiceError("config_required", "the first request must carry the config")
            return self.service.open(SessionOptions(), "grpc"), first.audio
        return self.service.open(options_from(first.config), "grpc"), b""

    async def StreamingRecognize(self, requests, context):
        try:
            live, pending_audio = await self.open_session(requests)
        except ServiceError as err:
            await abort(context, err)
        log.info("session %s start (grpc %s)", live.id, context.peer())
        try:
            yield to_proto(live.started_event())
            if pending_audio:
                for event in await self.service.feed(live, pending_audio):
                    yield to_proto(event)
            reason = "eof"
            while live.id in self.service.sessions:  # else finished by a limit
                try:
                    request = await asyncio.wait_for(anext(requests, None), self.service.idle_timeout)
                except TimeoutError:
                    reason = "idle"
                    break
                kind = request.WhichOneof("request") if request is not None else "eof"
                if kind == "eof":
                    break
                if kind != "audio":
                    raise ServiceError("bad_message", f"expected audio or eof after the config, got {kind}")
                for event in await self.service.feed(live, request.audio):
                    yield to_proto(event)
            if live.id in self.service.sessions:
                for event in await self.service.finish(live, reason):
                    yield to_proto(event)
        except ServiceError as err:
            for event in await self.service.finish(live):
                yield to_proto(event)
            await abort(context, err)
        finally:
            if live.id in self.service.sessions:  # cancelled by the client: finals still reach subscribers
                await self.service.finish(live, "disconnect")
            log.info("session %s end (%d finals)", live.id, live.session.finals)

    async def Recognize(self, request, context):
        if not request.audio:
            await abort(context, ServiceError("bad_audio", "no audio in the request"))
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
                             options=[("grpc.max_receive_message_length", service.limits.grpc_max_message_bytes)])
    pb_grpc.add_RecognizerServicer_to_server(RecognizerServicer(service, require_config), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection([SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME], server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    server.bound_port = port
    return server
