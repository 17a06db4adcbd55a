"""Cross-session batching: many sessions' chunks run together give each session exactly the
events it gets alone, whatever the chunkings, options and models."""
import asyncio
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon import Daemon, metric
from support import speech_sample, tiny_config, tiny_daemon_config

from streamrnn.acoustic import AcousticStream, run_streams
from streamrnn.audio import N_MELS, AudioError, read_audio
from streamrnn.config import BatchingConfig, Config, ModelConfig
from streamrnn.engine.backend import build_engine
from streamrnn.engine.batcher import Batcher, EngineError
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.engine.workers import EngineWorkers, portable, worker_config
from streamrnn.invariance import TOLERANCE
from streamrnn.serve.service import RecognitionService, ServiceError
from streamrnn_client.audio import file_chunks
from streamrnn_client.websocket import stream_audio

CHUNKINGS = [[1600], [160], [7, 3000, 161, 16000, 1, 999, 4410], [16000], [4800, 320]]
OPTIONS = [{}, {"phrases": ["KUBERNETES", "THE WORLD"]}, {"interim_results": False}, {"suggestions": 2}, {}]


def chunked(samples, sizes):
    out, start, index = [], 0, 0
    while start < len(samples):
        size = sizes[index % len(sizes)]
        out.append(samples[start:start + size].astype("<f4").tobytes())
        start, index = start + size, index + 1
    return out


def open_sessions(recognizer, count):
    return [recognizer.session(SessionOptions(encoding="f32le", **OPTIONS[i % len(OPTIONS)]))
            for i in range(count)]


def alone(recognizer, streams):
    results = []
    for session, chunks in zip(open_sessions(recognizer, len(streams)), streams):
        events = [e for chunk in chunks for e in session.feed(chunk)]
        results.append(events + session.finish())
    return results


def batched(recognizer, streams):
    """Round robin: every round, one batch with the next chunk (or the end) of every open stream."""
    sessions = open_sessions(recognizer, len(streams))
    results, position = [[] for _ in streams], [0] * len(streams)
    while any(p <= len(chunks) for p, chunks in zip(position, streams)):
        open_ones = [i for i, chunks in enumerate(streams) if position[i] <= len(chunks)]
        jobs = [(sessions[i], streams[i][position[i]] if position[i] < len(streams[i]) else None)
                for i in open_ones]
        for i, events in zip(open_ones, recognizer.run(jobs)):
            assert not isinstance(events, Exception), events
            results[i] += events
            position[i] += 1
    return results


def real_speech_streams():
    picks = [("speechocean762", 1), ("fsdd", 2), ("speechocean762", 5), ("librispeech-mini", 3), ("fsdd", 7)]
    streams = []
    for (name, index), sizes in zip(picks, CHUNKINGS):
        samples, rate = read_audio(speech_sample(name, index)[0])
        assert rate == 16000
        streams.append(chunked(samples[: 16000 * 6], sizes))
    return streams


def test_batched_events_equal_unbatched_on_real_speech(default_recognizer):
    streams = real_speech_streams()
    expected = alone(default_recognizer, streams)
    assert batched(default_recognizer, streams) == expected
    assert all(any(e["type"] == "final" for e in events) for events in expected)
    assert any(e["type"] == "suggestions" for e in expected[3])


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_batched_events_equal_unbatched_tiny(tiny_models, rnn):
    recognizer = Recognizer(tiny_config(tiny_models, rnn))
    rng = np.random.default_rng(1)
    streams = [chunked((rng.standard_normal(8000 * (i + 2)) * 0.1).astype(np.float32), sizes)
               for i, sizes in enumerate(CHUNKINGS)]
    assert batched(recognizer, streams) == alone(recognizer, streams)


def acoustic_outputs(model, features, groups):
    """Each stream's log-probs over two chunks, its batches made of `groups` (lists of stream indices)."""
    streams = [AcousticStream(model) for _ in features]
    outputs = [[] for _ in features]
    for _ in range(2):
        for group in groups:
            for i, log_probs in zip(group, run_streams(model, [streams[i] for i in group], [features[i] for i in group])):
                outputs[i].append(log_probs)
    return outputs


@pytest.mark.parametrize("rnn", ["builtin", "gru"])
def test_a_stream_gets_the_same_log_probs_in_any_batch(tiny_models, rnn):
    """Not just the same events: the same float32 log-probs (within invariance.TOLERANCE; to the bit
    on the Intel CPUs measured), alone or among 39 others, whatever their lengths (the matrix
    kernels change with the batch size unless invariance.py is applied)."""
    config = Config() if rnn == "builtin" else tiny_config(tiny_models, rnn)
    model = Recognizer(config).acoustic
    torch.manual_seed(0)
    features = [torch.randn(int(frames), N_MELS) for frames in torch.randint(3, 40, (40,))]
    alone = acoustic_outputs(model, features, [[i] for i in range(40)])
    for groups in ([list(range(40))], [list(range(0, 40, 2)), list(range(1, 40, 2))], [[0, 1, 2], list(range(3, 40))]):
        together = acoustic_outputs(model, features, groups)
        assert all(same(a, b) for mine, theirs in zip(alone, together) for a, b in zip(mine, theirs))


def same(a, b) -> bool:
    return torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=0, atol=TOLERANCE)


def test_an_lm_step_gets_the_same_outputs_in_any_batch(default_recognizer):
    lm = default_recognizer.lm
    start, _ = lm.start()
    words = ["THE", "CAT", "SAT", "ON", "A", "MAT"] * 4
    alone = [lm.advance_many([start], [word])[0] for word in words]
    together = lm.advance_many([start] * len(words), words)
    for (state, log_probs), (state_b, log_probs_b) in zip(alone, together):
        assert same(state[0], state_b[0]) and same(state[1], state_b[1]) and same(log_probs, log_probs_b)
    state, log_probs = lm.advance(start, ["THE"])
    assert same(log_probs, alone[0][1]) and same(lm.state_log_probs(state), log_probs)


def test_a_bad_chunk_fails_only_its_own_session(tiny_models):
    recognizer = Recognizer(tiny_config(tiny_models))
    good, bad = open_sessions(recognizer, 2)
    audio = np.zeros(1600, dtype="<f4").tobytes()
    results = recognizer.run([(good, audio), (bad, audio[:-1])])
    assert isinstance(results[1], ValueError) and "multiple of 4" in str(results[1])
    assert isinstance(results[0], list)


def test_batcher_serves_concurrent_sessions_in_order(tiny_models):
    recognizer = Recognizer(tiny_config(tiny_models))
    rng = np.random.default_rng(2)
    streams = [chunked((rng.standard_normal(16000) * 0.1).astype(np.float32), sizes) for sizes in CHUNKINGS]
    expected = alone(recognizer, streams)
    batcher = Batcher(recognizer, max_batch=3, max_wait_ms=2)

    async def stream(session, chunks):
        # all of a session's chunks are queued at once: the batcher must keep their order
        results = await asyncio.gather(*(batcher.submit(session, c) for c in chunks))
        return [e for events in results for e in events] + await batcher.submit(session, None)

    async def everyone():
        sessions = open_sessions(recognizer, len(streams))
        return await asyncio.gather(*(stream(s, c) for s, c in zip(sessions, streams)))

    try:
        assert asyncio.run(everyone()) == expected
    finally:
        batcher.close()


def through_engine(engine, streams):
    """Every stream's chunks through an engine's submit (all queued at once), the streams concurrently."""
    async def stream(session, chunks):
        results = await asyncio.gather(*(engine.submit(session, c) for c in chunks))
        events = [e for events in results for e in events] + await engine.submit(session, None)
        assert session.closed and session.finals == sum(e["type"] == "final" for e in events)
        return events

    async def everyone():
        sessions = [engine.open(SessionOptions(encoding="f32le", **OPTIONS[i % len(OPTIONS)]))
                    for i in range(len(streams))]
        return await asyncio.gather(*(stream(s, c) for s, c in zip(sessions, streams)))

    return asyncio.run(everyone())


@pytest.fixture
def tiny_workers(tiny_models):
    """Two workers that stay dead when killed (restarts have tests of their own)."""
    config = tiny_config(tiny_models)
    workers = EngineWorkers(config, 2, restart=False)
    yield workers
    workers.close()


def test_worker_processes_give_the_same_events_on_real_speech():
    config = Config()
    workers = EngineWorkers(config, 2)
    try:
        streams = real_speech_streams()
        assert through_engine(workers, streams) == alone(Recognizer(config), streams)
        assert [w.sessions for w in workers.workers] == [set(), set()]  # ended sessions are let go
    finally:
        workers.close()


def test_workers_share_the_cores_unless_threads_are_set():
    cores = os.cpu_count()
    assert worker_config(Config(), 2).model.threads == max(1, cores // 2)
    assert worker_config(Config(), 4 * cores).model.threads == 1
    assert worker_config(Config(model=ModelConfig(threads=3)), 2).model.threads == 3


def test_worker_processes_give_the_same_events_tiny(tiny_models, tiny_workers):
    rng = np.random.default_rng(4)
    streams = [chunked((rng.standard_normal(8000 * (i + 2)) * 0.1).astype(np.float32), sizes)
               for i, sizes in enumerate(CHUNKINGS)]
    assert through_engine(tiny_workers, streams) == alone(Recognizer(tiny_config(tiny_models)), streams)


def test_a_dead_worker_fails_its_sessions_and_spares_the_rest(tiny_workers):
    chunk = np.zeros(1600, dtype="<f4").tobytes()

    async def scenario():
        first, second = (tiny_workers.open(SessionOptions(encoding="f32le")) for _ in range(2))
        assert first.worker is not second.worker  # sessions are spread over the workers
        first.worker.process.kill()
        with pytest.raises(EngineError, match=f"engine worker {first.worker.index} died"):
            await tiny_workers.submit(first, chunk)
        with pytest.raises(EngineError, match="died"):
            await tiny_workers.submit(first, None)
        assert isinstance(await tiny_workers.submit(second, chunk), list)
        third = tiny_workers.open(SessionOptions(encoding="f32le"))
        assert third.worker is second.worker
        assert isinstance(await tiny_workers.submit(third, chunk), list)
        second.worker.process.kill()
        await asyncio.sleep(0)
        with pytest.raises(EngineError):
            await tiny_workers.submit(third, chunk)
        with pytest.raises(EngineError, match="every engine worker process has died"):
            for _ in range(50):  # until the reader thread has seen the second worker go
                tiny_workers.open(SessionOptions(encoding="f32le"))
                await asyncio.sleep(0.1)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_dead_worker_is_replaced_and_new_sessions_go_to_the_new_one(tiny_models):
    chunk = np.zeros(1600, dtype="<f4").tobytes()
    restarted = threading.Event()
    workers = EngineWorkers(tiny_config(tiny_models), 1, on_restart=lambda index: restarted.set())

    async def scenario():
        old = workers.open(SessionOptions(encoding="f32le"))
        assert isinstance(await workers.submit(old, chunk), list)
        old.worker.process.kill()
        with pytest.raises(EngineError, match="engine worker 0 died"):
            await workers.submit(old, chunk)
        assert await asyncio.to_thread(restarted.wait, 120)
        new = workers.open(SessionOptions(encoding="f32le"))
        assert new.worker is not old.worker and new.worker.process.pid != old.worker.process.pid
        assert isinstance(await workers.submit(new, chunk), list)
        with pytest.raises(EngineError, match="died"):
            await workers.submit(old, None)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        workers.close()


def test_the_daemon_restarts_a_killed_worker_and_counts_it(tiny_models, tmp_path):
    daemon = Daemon(tiny_daemon_config(tiny_models, tmp_path, "[batching]\nengine_processes = 1\n"))
    try:
        [worker_pid] = worker_pids(daemon.process.pid)
        os.kill(worker_pid, signal.SIGKILL)
        for _ in range(600):
            if metric(daemon, "streamrnn_engine_restarts_total ") >= 1:
                break
            time.sleep(0.2)
        assert metric(daemon, "streamrnn_engine_restarts_total ") == 1
        assert worker_pids(daemon.process.pid) not in ([], [worker_pid])
        events = asyncio.run(collect_events(daemon.url, file_chunks(speech_sample()[0])[0]))
        assert events[0]["type"] == "session" and events[-1]["type"] == "end"
        assert "engine worker 0 restarted" in daemon.log
    finally:
        daemon.stop()


def worker_pids(pid: int) -> list[int]:
    """The engine worker processes among a daemon's children (not multiprocessing's resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(p) for p in (task / "children").read_text().split()]
    return [child for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def test_a_bad_chunk_in_a_worker_fails_only_its_own_session(tiny_workers):
    chunk = np.zeros(1600, dtype="<f4").tobytes()

    async def scenario():
        sessions = [tiny_workers.open(SessionOptions(encoding="f32le")) for _ in range(4)]
        chunks = [chunk, chunk[:-1], chunk, chunk]  # sessions 0 and 2 share a worker, 1 and 3 the other
        return await asyncio.gather(*(tiny_workers.submit(s, c) for s, c in zip(sessions, chunks)),
                                    return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert isinstance(results[1], AudioError) and "multiple of 4" in str(results[1])
    assert all(isinstance(results[k], list) for k in (0, 2, 3))


class NeedsTwoArguments(Exception):
    def __init__(self, first, second):
        super().__init__(f"{first} {second}")


def test_an_error_that_cannot_cross_the_pipe_becomes_an_engine_error():
    assert portable([{"type": "partial"}]) == [{"type": "partial"}]
    assert isinstance(portable(AudioError("odd")), AudioError)
    unpicklable = RuntimeError(threading.Lock())
    for error in (NeedsTwoArguments(1, 2), unpicklable):
        converted = portable(error)
        assert isinstance(converted, EngineError) and type(error).__name__ in str(converted)
        pickle.loads(pickle.dumps(converted))


def test_the_service_reports_a_dead_worker_as_engine_failed(tiny_models):
    config = tiny_config(tiny_models)
    config.batching = BatchingConfig(engine_processes=1)
    service = RecognitionService(*build_engine(config))

    async def scenario():
        live = service.open(SessionOptions(encoding="f32le"), "test")
        assert isinstance(await service.feed(live, np.zeros(1600, dtype="<f4").tobytes()), list)
        service.engine.workers[0].process.kill()
        with pytest.raises(ServiceError) as caught:
            await service.feed(live, np.zeros(1600, dtype="<f4").tobytes())
        assert caught.value.code == "engine_failed" and "died" in caught.value.message
        await service.drain()  # a session whose worker died still closes
        assert not service.sessions

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        service.close_engine()


def test_a_daemon_with_engine_processes_streams_as_in_process(tmp_path, default_recognizer):
    """End to end: `serve` with two engine worker processes, two WebSocket streams of real speech."""
    config = tmp_path / "workers.toml"
    config.write_text("[batching]\nengine_processes = 2\n")
    files = [speech_sample("librispeech-mini", index)[0] for index in (3, 8)]
    streams = [file_chunks(path)[0][:60] for path in files]
    daemon = Daemon(config)
    try:
        async def both():
            return await asyncio.gather(*(collect_events(daemon.url, chunks) for chunks in streams))
        served = asyncio.run(both())
        assert len(child_processes(daemon.process.pid, "spawn_main")) == 2  # the engine workers
        together, alone = (metric(daemon, name + " ") for name in
                           ("streamrnn_resident_memory_bytes", "process_resident_memory_bytes"))
        assert together > alone * 1.3  # the workers' memory is counted: each holds its own models
    finally:
        assert daemon.stop() == 0
    for chunks, events in zip(streams, served):
        session = default_recognizer.session(SessionOptions())
        expected = [e for chunk in chunks for e in session.feed(chunk)] + session.finish()
        assert [e for e in events if e["type"] in ("partial", "final", "suggestions")] == expected
        assert any(e["type"] == "final" for e in expected)


async def collect_events(url, chunks):
    return [{k: v for k, v in e.items() if k != "seq"} async for e in stream_audio(url, chunks)]


def child_processes(pid: int, name: str) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if name in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
