"""Files through the streaming engine, chunk by chunk, as if they were live."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from .audio import SUPPORTED_RATES, AudioError, read_audio
from .engine import Recognizer, SessionOptions


def load_for_streaming(path) -> tuple[np.ndarray, int]:
    """A file's samples at a rate the engine takes (rare rates resampled to 16 kHz first)."""
    samples, rate = read_audio(path)
    if len(samples) == 0:
        raise AudioError(f"{path} has no audio samples")
    if rate not in SUPPORTED_RATES:
        samples = torchaudio.functional.resample(torch.from_numpy(samples), rate, 16000).numpy()
        rate = 16000
    return samples, rate


def stream_file(recognizer: Recognizer, path, chunk_ms: int = 100, **options):
    """Yield the events of streaming a file in chunks of `chunk_ms`."""
    samples, rate = load_for_streaming(path)
    session = recognizer.session(SessionOptions(sample_rate=rate, **options))
    step = max(1, rate * chunk_ms // 1000)
    for start in range(0, len(samples), step):
        yield from session.feed_samples(samples[start:start + step])
    yield from session.finish()


def final_text(events) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "final")
