"""Files through the streaming engine, chunk by chunk, as if they were live."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from .audio import SAMPLE_RATE, SUPPORTED_RATES, AudioError, chunks, read_audio
from .engine import Recognizer, SessionOptions


def load_for_streaming(path) -> tuple[np.ndarray, int]:
    """A file's samples at a rate the engine takes (rare rates resampled to 16 kHz first)."""
    samples, rate = read_audio(path)
    if len(samples) == 0:
        raise AudioError(f"{path} has no audio samples")
    if rate not in SUPPORTED_RATES:
        return resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE
    return samples, rate


def load_16k(path) -> np.ndarray:
    """A file's samples at 16 kHz, whatever its own rate."""
    samples, rate = load_for_streaming(path)
    return samples if rate == SAMPLE_RATE else resample(samples, rate, SAMPLE_RATE)


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    return torchaudio.functional.resample(torch.from_numpy(samples), rate, new_rate).numpy()


def stream_file(recognizer: Recognizer, path, chunk_ms: int = 100, **options):
    """Yield the events of streaming a file in chunks of `chunk_ms`."""
    samples, rate = load_for_streaming(path)
    yield from stream_samples(recognizer, samples, rate, chunk_ms, **options)


def stream_samples(recognizer: Recognizer, samples: np.ndarray, rate: int, chunk_ms: int | None, **options):
    """Yield the events of streaming samples in chunks of `chunk_ms` (all at once when None)."""
    session = recognizer.session(SessionOptions(sample_rate=rate, **options))
    for chunk in chunks(samples, rate, chunk_ms):
        yield from session.feed_samples(chunk)
    yield from session.finish()


def final_text(events) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "final")
