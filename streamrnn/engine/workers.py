"""Engine work in worker processes (`[batching] engine_processes`).

One engine thread cannot use more than one core (the GIL), and in the daemon
it shares that lock with the event loop. Each worker process loads the models
and runs its own Batcher; a session lives in one worker for its whole life
(resumes included), so its state never moves, and the daemon holds only a
handle on it. A worker that dies fails its sessions' pending and later chunks
with an EngineError naming it; new sessions go to the workers still alive, and
a fresh worker takes the dead one's place after a backoff.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import multiprocessing
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable

from streamrnn.config import Config
from streamrnn.engine.batcher import Batcher, BatchObserver, EngineError, Job, settle_all, settle_batch
from streamrnn.engine.recognizer import Recognizer, Session, SessionOptions

log = logging.getLogger("streamrnn.engine.workers")
START_TIMEOUT_S = 300.0
# Seconds to wait before starting a fresh worker in a dead one's place, by how many times that
# place has died within RESTART_MEMORY_S: a worker that keeps dying is retried less and less often.
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
RESTART_MEMORY_S = 300.0


class RemoteSession:
    """The daemon's handle on a session that lives in a worker process."""

    def __init__(self, worker: "Worker", key: int, options: SessionOptions):
        self.worker, self.key, self.options = worker, key, options
        self.closed = False
        self.finals = 0  # as Session counts them

    @property
    def bytes_per_second(self) -> int:
        return self.options.bytes_per_second


class Worker:
    """One worker process and the pipe to it; a reader thread settles the chunks it answers."""

    def __init__(self, context, config: Config, index: int, on_batch: BatchObserver | None,
                 on_death: Callable[["Worker"], None] | None = None):
        """`on_death(worker)` is called, from the reader thread, when a worker that had started dies."""
        self.index = index
        self.on_batch, self.on_death = on_batch, on_death
        self.started = False
        self.connection, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(config, child), daemon=True,
                                       name=f"streamrnn-engine-{index}")
        self.process.start()
        child.close()
        self.lock = threading.Lock()  # one message on the pipe at a time; guards pending and failure
        self.pending: dict[int, asyncio.Future] = {}  # chunks sent, by request number
        self.requests = itertools.count()
        self.sessions: set[int] = set()  # keys of the session handles alive here
        self.dropped: list[int] = []  # keys whose handles are gone, for the worker to forget
        self.failure: str | None = None
        self.stopping = False
        self.ready = threading.Event()
        threading.Thread(target=self.read, name=f"engine-{index}-reader", daemon=True).start()

    def send(self, kind: str, *fields, future: asyncio.Future | None = None) -> None:
        """A message for the worker; `future` gets its answer."""
        with self.lock:
            if self.failure:
                raise EngineError(self.failure)
            request = next(self.requests)
            if future is not None:
                self.pending[request] = future
            try:
                while self.dropped:
                    send_message(self.connection, ("drop", None, self.dropped.pop()))
                send_message(self.connection, (kind, request, *fields))
            except (OSError, ValueError) as err:
                self.pending.pop(request, None)
                raise EngineError(f"engine worker {self.index} cannot be reached: {err}") from err

    def read(self) -> None:
        try:
            while True:
                kind, *fields = self.connection.recv()
                if kind == "results":
                    self.settle(*fields)
                elif kind == "ready":
                    self.started = True
                    self.ready.set()
                elif kind == "failed":
                    self.fail(fields[0])
                    return
        except (EOFError, OSError):
            self.process.join(5)
            self.fail(f"engine worker {self.index} died (exit code {self.process.exitcode}); "
                      "its sessions are lost")
        except Exception as err:  # a message that cannot be read: its sessions must not wait forever
            self.fail(f"engine worker {self.index} sent a message that cannot be read ({err!r}); "
                      "its sessions are lost")

    def settle(self, answers: list[tuple[int, object]], seconds: float | None) -> None:
        """A batch's results (or errors for chunks the worker could not run) to their futures."""
        with self.lock:
            futures = [(self.pending.pop(request, None), result) for request, result in answers]
        settle_batch([(future, result) for future, result in futures if future is not None], seconds,
                     self.on_batch)

    def fail(self, reason: str) -> None:
        with self.lock:
            if self.stopping:
                reason = "the engine is stopped"
            elif not self.failure:
                log.error("%s", reason)
            died = not self.stopping and not self.failure and self.started
            self.failure = self.failure or reason
            pending, self.pending = self.pending, {}
        self.ready.set()
        settle_all([(future, EngineError(self.failure)) for future in pending.values()])
        if died and self.on_death is not None:
            self.on_death(self)

    def release(self, key: int) -> None:
        """A session handle is gone (from any thread, even inside `send` when the garbage collector
        runs there): the worker forgets the session, if it has not ended, with the next message."""
        self.sessions.discard(key)
        self.dropped.append(key)

    def stop(self, timeout: float = 10.0) -> None:
        with self.lock:
            self.stopping = True
        try:
            self.send("stop")
        except EngineError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()


def worker_config(config: Config, count: int) -> Config:
    """With `model.threads = 0`, the cores shared out among the workers: torch's own choice, every
    core in every worker, has them fight each other (and the daemon) for the same cores."""
    if config.model.threads:
        return config
    threads = max(1, (os.cpu_count() or 1) // count)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, threads=threads))


class EngineWorkers:
    """Batcher's interface (open, submit, close) over `count` worker processes."""

    def __init__(self, config: Config, count: int, on_batch: BatchObserver | None = None,
                 on_restart: Callable[[int], None] | None = None, restart: bool = True):
        """`on_restart(index)` is told of each worker started in a dead one's place; with `restart`
        off, dead workers stay dead."""
        self.context = multiprocessing.get_context("spawn")  # no forked copies of torch's threads
        self.config = worker_config(config, count)
        self.on_batch, self.on_restart, self.restart = on_batch, on_restart, restart
        self.deaths: dict[int, list[float]] = {index: [] for index in range(count)}
        self.closed = False
        self.workers = [self.start_worker(index) for index in range(count)]
        self.keys = itertools.count()
        for worker in self.workers:
            if not worker.ready.wait(START_TIMEOUT_S) or worker.failure:
                self.close()
                raise EngineError(worker.failure or f"engine worker {worker.index} did not start "
                                                    f"within {START_TIMEOUT_S:g} s")

    def start_worker(self, index: int) -> Worker:
        return Worker(self.context, self.config, index, self.on_batch, self.worker_died if self.restart else None)

    def worker_died(self, worker: Worker) -> None:
        now = time.monotonic()
        deaths = self.deaths[worker.index] = [t for t in self.deaths[worker.index] if now - t < RESTART_MEMORY_S]
        deaths.append(now)
        delay = RESTART_DELAYS_S[min(len(deaths), len(RESTART_DELAYS_S)) - 1]
        log.warning("starting a new engine worker %d in %g s", worker.index, delay)
        threading.Thread(target=self.replace, args=(worker.index, delay), daemon=True,
                         name=f"engine-{worker.index}-restart").start()

    def replace(self, index: int, delay: float) -> None:
        """A fresh worker in place `index` after `delay` seconds; if it cannot start, the next try
        waits longer."""
        time.sleep(delay)
        if self.closed:
            return
        worker = self.start_worker(index)
        if not worker.ready.wait(START_TIMEOUT_S) or worker.failure or self.closed:
            worker.stop()
            if not self.closed:
                self.worker_died(worker)
            return
        self.workers[index] = worker
        log.warning("engine worker %d restarted (pid %d)", index, worker.process.pid)
        if self.on_restart is not None:
            self.on_restart(index)

    def open(self, options: SessionOptions) -> RemoteSession:
        options.validate()
        alive = [w for w in self.workers if not w.failure]
        if not alive:
            raise EngineError("every engine worker process has died")
        worker = min(alive, key=lambda w: len(w.sessions))
        session = RemoteSession(worker, next(self.keys), options)
        worker.send("open", session.key, options)
        worker.sessions.add(session.key)
        weakref.finalize(session, worker.release, session.key).atexit = False
        return session

    async def submit(self, session: RemoteSession, audio) -> list[dict]:
        """The session's events for this chunk (None: the end of its stream); raises its error."""
        future = asyncio.get_running_loop().create_future()
        try:
            session.worker.send("chunk", session.key, audio, future=future)
            events = await future
            session.finals += sum(event["type"] == "final" for event in events)
            return events
        finally:
            if audio is None:
                session.closed = True

    def close(self) -> None:
        self.closed = True
        for worker in self.workers:
            worker.stop()


def worker_main(config: Config, connection) -> None:
    """A worker process: load the models, then run the chunks the daemon sends until it says stop."""
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            send_message(connection, message)

    def answer(jobs: list[Job], results: list, seconds: float | None = None) -> None:
        """One message for a batch's results (each job's reply is its request number)."""
        send(("results", [(job.reply, portable(result)) for job, result in zip(jobs, results)], seconds))

    try:
        recognizer = Recognizer(config)
    except Exception as err:
        send(("failed", f"engine worker could not load the models: {err}"))
        return
    batcher = Batcher(recognizer, config.batching.max_batch, config.batching.max_wait_ms, finish=answer)
    sessions: dict[int, Session | Exception] = {}
    send(("ready",))
    try:
        serve_requests(connection, recognizer, batcher, sessions, answer)
    finally:
        batcher.close()


def send_message(connection, message: tuple) -> None:
    """Plain pickle: multiprocessing's own pickler (for sockets and file descriptors, which these
    messages never hold) costs more to set up than a chunk's message costs to pickle."""
    connection.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def portable(result):
    """A result that crosses the pipe: an error that would not (one that cannot be pickled, or not
    rebuilt from its pickle in the daemon) becomes an EngineError that names it."""
    if not isinstance(result, BaseException):
        return result
    try:
        pickle.loads(pickle.dumps(result, pickle.HIGHEST_PROTOCOL))
        return result
    except Exception as err:
        return EngineError(f"{type(result).__name__}: {result} ({type(err).__name__}: {err})")


def serve_requests(connection, recognizer: Recognizer, batcher: Batcher, sessions: dict, answer) -> None:
    while True:
        try:
            kind, request, *fields = connection.recv()
        except EOFError:  # the daemon is gone
            return
        if kind == "stop":
            return
        if kind == "open":
            key, options = fields
            try:
                sessions[key] = recognizer.session(options)
            except Exception as err:
                sessions[key] = err
        elif kind == "drop":
            sessions.pop(fields[0], None)
        elif kind == "chunk":
            key, audio = fields
            session = sessions.get(key, ValueError("session is closed"))
            if audio is None:
                sessions.pop(key, None)  # its last chunk: the batcher holds it until then
            if isinstance(session, Exception):
                answer([Job(None, audio, request)], [session])
            else:
                batcher.put(session, audio, request)
