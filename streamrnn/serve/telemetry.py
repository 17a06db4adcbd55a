"""Prometheus metrics of the daemon."""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from streamrnn.serve import procstats

REGISTRY = CollectorRegistry()
SESSIONS_ACTIVE = Gauge("streamrnn_sessions_active", "Sessions open now", registry=REGISTRY)
SESSIONS_TOTAL = Counter("streamrnn_sessions_total", "Sessions opened", ["transport"], registry=REGISTRY)
SUBSCRIBERS_ACTIVE = Gauge("streamrnn_subscribers_active", "Live transcript subscribers", registry=REGISTRY)
AUDIO_SECONDS = Counter("streamrnn_audio_seconds_total", "Audio received, in seconds", registry=REGISTRY)
COMPUTE_SECONDS = Counter("streamrnn_compute_seconds_total",
                          "Engine time spent on audio (RTF = this / audio seconds)", registry=REGISTRY)
RESUMES = Counter("streamrnn_resumes_total", "Sessions resumed after a dropped connection", registry=REGISTRY)
FINALS = Counter("streamrnn_finals_total", "Final results sent", registry=REGISTRY)
ERRORS = Counter("streamrnn_errors_total", "Errors returned to clients", ["code"], registry=REGISTRY)
CHUNK_LATENCY = Histogram("streamrnn_chunk_latency_seconds",
                          "From an audio chunk's arrival to its events being ready", registry=REGISTRY,
                          buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
ENGINE_RESTARTS = Counter("streamrnn_engine_restarts_total",
                          "Engine worker processes started in the place of dead ones", registry=REGISTRY)
BATCH_SIZE = Histogram("streamrnn_batch_size", "Session chunks run together in one engine batch", registry=REGISTRY,
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
CLUSTER_REDIS_UP = Gauge("streamrnn_cluster_redis_up",
                         "1 while the [cluster] Redis answers (sessions resumable on other replicas), else 0",
                         registry=REGISTRY)
CLUSTER_JOURNAL_BYTES = Counter("streamrnn_cluster_journal_bytes_total",
                                "Session audio written to the [cluster] Redis journal", registry=REGISTRY)
CLUSTER_RESTORES = Counter("streamrnn_cluster_restores_total",
                           "Sessions taken over from another replica through Redis", registry=REGISTRY)
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes and friends: this process only
RESIDENT_MEMORY = Gauge("streamrnn_resident_memory_bytes",
                        "Resident memory of the daemon and its engine worker processes together", registry=REGISTRY)
RESIDENT_MEMORY.set_function(lambda: procstats.tree_resident_bytes(os.getpid()))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def record_batch(seconds: float, size: int) -> None:
    COMPUTE_SECONDS.inc(seconds)
    BATCH_SIZE.observe(size)


def record_restart(index: int) -> None:
    ENGINE_RESTARTS.inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)
