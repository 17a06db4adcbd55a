"""Drive `Recognizer.run` with many sessions of real speech, 100 ms chunks, every session in every
round (what the daemon's batcher does under load), as fast as it goes: the engine's busy seconds per
audio second per stream, optionally under cProfile, and every event written out (to compare runs).

`--compare` runs three more sets of the same sessions, round by round in turn with the first, so that
all sides see the same machine speed (it drifts here by up to 30 % over minutes): batches of 1 as the
engine ships (a lone row padded to two, for batch invariance: see streamrnn/invariance.py), and
batches of N and of 1 with torch's own weight layout and kernels (what invariance costs; with one
row, the fastest a server that never batches could be, its numbers then differing in the last bits).

    python -m scripts.engine_load --manifest /work/shared/data/speech/librispeech-mini.jsonl \
        --streams 64 --seconds 10 [--max-batch 1] [--compare] [--profile out.prof] \
        [--events out.json] [--config bench.toml]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import time

from streamrnn.config import load_config
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.tools.bench import pcm_chunks, speech_clips, stream_audio_for


class Side:
    """One set of sessions fed the same streams, in batches of at most `max_batch`, its busy time kept."""

    def __init__(self, recognizer: Recognizer, streams: list[list[bytes]], max_batch: int):
        self.recognizer = recognizer
        self.sessions = [recognizer.session(SessionOptions()) for _ in streams]
        self.events = [[] for _ in streams]
        self.max_batch = max_batch or len(streams)
        self.busy = self.cpu = 0.0

    def run_round(self, jobs: list) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        size = self.max_batch
        results = [r for start in range(0, len(jobs), size) for r in self.recognizer.run(jobs[start:start + size])]
        self.busy += time.perf_counter() - started
        self.cpu += time.process_time() - cpu_started
        for k, result in enumerate(results):
            self.events[k] += result

    def report(self, name: str, streams: int, seconds: float) -> str:
        return (f"{name}: {streams} streams x {seconds:g} s: {self.busy:.2f} s busy ({self.cpu:.2f} s CPU), "
                f"{self.busy / seconds / streams:.5f} s per audio second per stream, "
                f"{streams * seconds / self.busy:.1f} streams' worth of real time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=0,
                        help="run each round's chunks in batches of at most this many (0: all in one)")
    parser.add_argument("--compare", action="store_true",
                        help="also run the same sessions in batches of 1, and with torch's own layout, interleaved")
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
    sides = {f"batches of {args.max_batch or args.streams}": Side(recognizer, streams, args.max_batch)}
    if args.compare:
        plain = Recognizer(load_config(args.config), batch_invariant=False)
        sides["batches of 1"] = Side(recognizer, streams, 1)
        sides[f"batches of {args.max_batch or args.streams}, torch's layout"] = Side(plain, streams, args.max_batch)
        sides["batches of 1, torch's layout (one-row kernels)"] = Side(plain, streams, 1)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    for position in range(len(streams[0]) + 1):
        for side in sides.values():
            side.run_round([(s, chunks[position] if position < len(chunks) else None)
                            for s, chunks in zip(side.sessions, streams)])
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    first = next(iter(sides.values()))
    for name, side in sides.items():
        print(side.report(name, args.streams, args.seconds))
        if side is not first:
            print(f"  the first side's throughput / this one's: {side.busy / first.busy:.2f} x; "
                  f"events {'identical' if side.events == first.events else 'differ'}")
    if args.events:
        with open(args.events, "w") as out:
            json.dump(first.events, out)


if __name__ == "__main__":
    main()
