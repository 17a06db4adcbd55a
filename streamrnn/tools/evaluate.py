"""`streamrnn eval`: WER, CER and RTF over manifests, streaming (in chunks) and offline (each
file at once), for streamrnn and optionally a peer recognizer fed the same 16 kHz chunks."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from streamrnn.audio import SAMPLE_RATE, load_16k
from streamrnn.engine.recognizer import Recognizer
from streamrnn.engine.transcribe import final_text, stream_samples
from streamrnn.manifest import load_manifest
from streamrnn.tokens import normalize
from streamrnn.tools.report import markdown_table, percent
from streamrnn.wer import ErrorRate, matched

MODES = ("streaming", "offline")


class Streamrnn:
    """The streaming engine, behind the same interface as the peers in peer.py."""

    name = "streamrnn"

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        self.words: list[dict] = []  # the last transcript's words, with their confidences

    def transcribe(self, samples: np.ndarray, chunk_ms: int | None = 100) -> tuple[str, float]:
        started = time.perf_counter()
        events = list(stream_samples(self.recognizer, samples, SAMPLE_RATE, chunk_ms, suggestions=0))
        self.words = [word for event in events if event["type"] == "final" for word in event["words"]]
        return normalize(final_text(events)), time.perf_counter() - started


class Tally:
    """Errors and compute time of one system in one mode."""

    def __init__(self):
        self.errors, self.compute_s = ErrorRate(), 0.0
        self.confidences = {True: [], False: []}  # of right and of wrong words

    def add_confidences(self, reference: str, words: list[dict]) -> None:
        """Words whose text is not the transcript's (a peer's) are not counted."""
        for word, right in zip(words, matched(reference.split(), [w["word"] for w in words])):
            self.confidences[right].append(word["conf"])

    def summary(self, audio_s: float) -> dict:
        summary = {"wer": self.errors.wer, "cer": self.errors.cer, "rtf": self.compute_s / max(audio_s, 1e-9)}
        if self.confidences[True] or self.confidences[False]:
            summary["confidence"] = {"right_words": mean_or_none(self.confidences[True]),
                                     "wrong_words": mean_or_none(self.confidences[False])}
        return summary


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def spread(items: list, count: int) -> list:
    """`count` items evenly spaced over the list, first and last included (all when count is 0)."""
    if not count or count >= len(items):
        return items
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))]


def evaluate(systems, manifest, split: str = "all", chunk_ms: int = 100, hyps=None, limit: int = 0,
             sample: int = 0) -> list[dict]:
    """One result row per system; `hyps` (an open file) gets one JSON line per utterance.
    `limit`: the first N utterances of the split; `sample`: N of them evenly spread."""
    utterances = spread(load_manifest(manifest, split)[: limit or None], sample)
    if not utterances:
        raise ValueError(f"{manifest}: no utterances in split {split!r}")
    tallies = {(system.name, mode): Tally() for system in systems for mode in MODES}
    audio_s = 0.0
    for utterance in utterances:
        samples = load_16k(utterance.audio)
        audio_s += len(samples) / SAMPLE_RATE
        texts = {}
        for system in systems:
            for mode, chunk in zip(MODES, (chunk_ms, None)):
                text, seconds = system.transcribe(samples, chunk)
                tallies[system.name, mode].errors.add(utterance.text, text)
                tallies[system.name, mode].add_confidences(utterance.text, getattr(system, "words", []))
                tallies[system.name, mode].compute_s += seconds
                texts.setdefault(system.name, {})[mode] = text
        if hyps:
            hyps.write(json.dumps({"manifest": str(manifest), "audio": str(utterance.audio),
                                   "ref": utterance.text, "hyps": texts}) + "\n")
    return [{"manifest": Path(manifest).name, "system": system.name, "split": split, "chunk_ms": chunk_ms,
             "utterances": len(utterances), "audio_minutes": audio_s / 60,
             **{mode: tallies[system.name, mode].summary(audio_s) for mode in MODES}} for system in systems]


def results_table(rows: list[dict]) -> str:
    headers = ["manifest", "system", "utterances", "audio min", "WER streaming", "WER offline",
               "CER streaming", "CER offline", "RTF streaming", "RTF offline"]
    return markdown_table(headers, [
        [r["manifest"], r["system"], r["utterances"], f"{r['audio_minutes']:.1f}",
         percent(r["streaming"]["wer"]), percent(r["offline"]["wer"]),
         percent(r["streaming"]["cer"]), percent(r["offline"]["cer"]),
         f"{r['streaming']['rtf']:.3f}", f"{r['offline']['rtf']:.3f}"] for r in rows])


def summary_lines(row: dict) -> list[str]:
    """The plain output of one manifest and streamrnn alone."""
    return [f"utterances {row['utterances']} ({row['audio_minutes']:.1f} min, split {row['split']})",
            f"WER {percent(row['streaming']['wer'])}",
            f"CER {percent(row['streaming']['cer'])}",
            f"RTF {row['streaming']['rtf']:.4f}",
            f"offline WER {percent(row['offline']['wer'])}",
            f"offline CER {percent(row['offline']['cer'])}"] + confidence_lines(row['streaming'])


def confidence_lines(summary: dict) -> list[str]:
    confidence = summary.get("confidence")
    if not confidence:
        return []
    return [f"mean confidence of {kind.replace('_', ' ')} {value:.3f}" for kind, value in confidence.items()
            if value is not None]
