"""The engine a daemon runs its sessions' audio on, built in one place: a batcher thread in the
daemon's own process, or engine worker processes (`[batching] engine_processes`)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from streamrnn.config import Config
from streamrnn.engine.batcher import Batcher, BatchObserver
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.engine.workers import EngineWorkers


class SessionHandle(Protocol):
    """A session as the daemon holds it: `Session` in this process, `RemoteSession` in a worker."""
    options: SessionOptions
    finals: int  # finals sent so far
    closed: bool  # its stream has ended

    @property
    def bytes_per_second(self) -> int: ...


class Engine(Protocol):
    def open(self, options: SessionOptions) -> SessionHandle: ...

    async def submit(self, session: SessionHandle, audio: bytes | None) -> list[dict]:
        """The session's events for this chunk (None: the end of its stream); raises its error."""

    def close(self) -> None: ...


def build_engine(config: Config, on_batch: BatchObserver | None = None,
                 on_restart: Callable[[int], None] | None = None) -> tuple[Recognizer, Engine]:
    """This process's recognizer (its LM answers suggest and score) and the engine for session audio.
    `on_batch(seconds, size)` is told of every batch the engine runs, `on_restart(index)` of every
    engine worker process started in a dead one's place."""
    batching = config.batching
    recognizer = Recognizer(config, acoustic=not batching.engine_processes)
    if batching.engine_processes:
        return recognizer, EngineWorkers(config, batching.engine_processes, on_batch, on_restart)
    return recognizer, Batcher(recognizer, batching.max_batch, batching.max_wait_ms, on_batch=on_batch)
