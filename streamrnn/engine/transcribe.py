"""Files through the streaming engine, chunk by chunk, as if they were live."""
from __future__ import annotations

import numpy as np

from streamrnn.audio import chunks, load_for_streaming
from streamrnn.engine.recognizer import Recognizer, SessionOptions


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
