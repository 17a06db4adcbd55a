"""Drive `Recognizer.run` with many sessions of real speech, 100 ms chunks, every session in every
batch (what the daemon's batcher does under load), as fast as it goes: the engine's busy seconds per
audio second per stream, optionally under cProfile, and every event written out (to compare runs).

    python -m scripts.engine_load --manifest /work/shared/data/speech/librispeech-mini.jsonl \
        --streams 64 --seconds 10 [--max-batch 1] [--profile out.prof] [--events out.json] [--config bench.toml]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import time

from streamrnn.bench import pcm_chunks, speech_clips, stream_audio_for
from streamrnn.config import load_config
from streamrnn.engine import Recognizer, SessionOptions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=0,
                        help="run each round's chunks in batches of at most this many (0: all in one)")
    parser.add_argument("--config")
    parser.add_argument("--profile", help="write a cProfile of the batches here")
    parser.add_argument("--events", help="write every session's events here (JSON)")
    args = parser.parse_args()
    recognizer = Recognizer(load_config(args.config))
    clips = speech_clips([], args.manifest, args.split)
    streams = [pcm_chunks(stream_audio_for(clips, i, args.seconds), args.chunk_ms) for i in range(args.streams)]
    warm = recognizer.session(SessionOptions())
    for chunk in streams[0][:20]:
        warm.feed(chunk)
    sessions = [recognizer.session(SessionOptions()) for _ in streams]
    events = [[] for _ in streams]
    profiler = cProfile.Profile() if args.profile else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    for position in range(len(streams[0]) + 1):
        jobs = [(s, chunks[position] if position < len(chunks) else None) for s, chunks in zip(sessions, streams)]
        size = args.max_batch or len(jobs)
        results = [r for start in range(0, len(jobs), size) for r in recognizer.run(jobs[start:start + size])]
        for k, result in enumerate(results):
            events[k] += result
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    busy = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    print(f"{args.streams} streams x {args.seconds:g} s: {busy:.2f} s busy ({cpu:.2f} s CPU), "
          f"{busy / args.seconds / args.streams:.5f} s per audio second per stream, "
          f"{args.streams * args.seconds / busy:.1f} streams' worth of real time")
    if args.events:
        with open(args.events, "w") as out:
            json.dump(events, out)


if __name__ == "__main__":
    main()
