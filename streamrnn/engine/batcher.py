"""Cross-session batching for the daemon: one engine thread takes the pending
chunks of all sessions and runs them through `Recognizer.run` as one batch.

Idle, the thread sleeps on a condition variable (no polling, no CPU). Chunks
of one session stay in order: a batch holds at most one chunk per session.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable

from streamrnn.engine.recognizer import Recognizer, Session, SessionOptions
from streamrnn_client.protocol import StreamrnnError


class EngineError(StreamrnnError, RuntimeError):
    """The engine cannot run a session's audio any more (stopped, or its worker process died)."""


@dataclass
class Job:
    session: Session
    audio: object  # PCM bytes, or None for the end of the stream
    reply: object  # where its events (or its error) go: an asyncio future, or a worker's request number


BatchObserver = Callable[[float, int], None]  # told each batch's seconds and size


def settle_batch(settlements: list[tuple[asyncio.Future, object]], seconds: float | None,
                 on_batch: BatchObserver | None) -> None:
    """A batch's results to their futures, and its seconds and size to `on_batch` (seconds None:
    errors for chunks that were never run, which are no batch)."""
    if seconds is not None and on_batch is not None:
        on_batch(seconds, len(settlements))
    settle_all(settlements)


class Batcher:
    def __init__(self, recognizer: Recognizer, max_batch: int = 64, max_wait_ms: float = 5.0,
                 finish: Callable[[list[Job], list, float | None], None] | None = None,
                 on_batch: BatchObserver | None = None):
        """`finish(jobs, results, seconds)` hands results on, from the engine thread: a batch's, with
        the seconds it took, or (seconds None) errors for jobs left when the engine stops. By
        default each job's reply is the future that awaits its result."""
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.finish = finish or self.settle_jobs
        self.on_batch = on_batch
        self.pending: deque[Job] = deque()
        self.ready = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self.work, name="engine-batcher", daemon=True)
        self.thread.start()

    def settle_jobs(self, jobs: list[Job], results: list, seconds: float | None) -> None:
        settle_batch([(job.reply, result) for job, result in zip(jobs, results)], seconds, self.on_batch)

    def open(self, options: SessionOptions) -> Session:
        return self.recognizer.session(options)

    async def submit(self, session: Session, audio) -> list[dict]:
        """The session's events for this chunk (None: the end of its stream); raises its error."""
        future = asyncio.get_running_loop().create_future()
        self.put(session, audio, future)
        return await future

    def put(self, session: Session, audio, reply) -> None:
        """Queue a chunk; `finish` hands `reply` its events or its error, from the engine thread."""
        with self.ready:
            if self.stopped:
                raise EngineError("the engine is stopped")
            self.pending.append(Job(session, audio, reply))
            self.ready.notify()

    def close(self) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify()
        self.thread.join()

    def work(self) -> None:
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            started = time.perf_counter()
            try:
                results = self.recognizer.run([(job.session, job.audio) for job in batch])
            except Exception as err:  # a bug must not kill the engine thread: every job gets it
                results = [err] * len(batch)
            self.finish(batch, results, time.perf_counter() - started)

    def next_batch(self) -> list[Job] | None:
        """Wait for work; give late chunks up to max_wait to join; take at most one per session."""
        with self.ready:
            while not self.pending and not self.stopped:
                self.ready.wait()
            if self.stopped:
                stopped = list(self.pending)
                self.finish(stopped, [EngineError("the engine is stopped")] * len(stopped), None)
                return None
            if self.max_batch > 1 and self.max_wait_s > 0:
                self.ready.wait_for(lambda: len(self.pending) >= self.max_batch or self.stopped,
                                    self.max_wait_s)
            batch, later, seen = [], deque(), set()
            while self.pending and len(batch) < self.max_batch:
                job = self.pending.popleft()
                (later if id(job.session) in seen else batch).append(job)
                seen.add(id(job.session))
            self.pending.extendleft(reversed(later))
            return batch


def settle_all(settlements: list[tuple[asyncio.Future, object]]) -> None:
    """Set futures' results (an exception: their error) from any thread, with one wake-up of each
    event loop they belong to."""
    by_loop = defaultdict(list)
    for future, result in settlements:
        by_loop[future.get_loop()].append((future, result))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle, pairs)
        except RuntimeError:  # its event loop is closed: nobody is waiting any more
            pass


def settle(settlements: list[tuple[asyncio.Future, object]]) -> None:
    for future, result in settlements:
        if future.cancelled():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
