"""Audio for the client: files read with soundfile, raw PCM chunks, real-time pacing. numpy only
(the daemon resamples any supported rate itself; only a rate it does not take is resampled here)."""
from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import numpy as np
import soundfile

from streamrnn_client.protocol import SAMPLE_RATES, AudioError, check_encoding

FALLBACK_RATE = 16000  # what a file at a rate the daemon does not take is resampled to
FORMATS = "wav, flac, ogg, opus or mp3"


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read a wav/flac/ogg/opus/mp3 file as mono float32 (channels mixed) and its sample rate."""
    try:
        with open(path, "rb"):  # the file's own problem, named before libsndfile's "System error"
            pass
    except FileNotFoundError as err:
        raise AudioError(f"cannot read audio file {path}: no such file") from err
    except IsADirectoryError as err:
        raise AudioError(f"cannot read audio file {path}: it is a folder") from err
    except OSError as err:
        raise AudioError(f"cannot read audio file {path}: {(err.strerror or str(err)).lower()}") from err
    return decode_audio(str(path), path)


def decode_audio(source, name) -> tuple[np.ndarray, int]:
    """A wav/flac/ogg/opus/mp3 file (a path, or a binary file object such as an upload's bytes in
    io.BytesIO) as mono float32 (channels mixed) and its sample rate; errors name the file `name`."""
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        reason = str(getattr(err, "error_string", "") or err).rstrip(".")
        raise AudioError(f"cannot read audio file {name}: not a {FORMATS} file that can be read ({reason})") \
            from err
    return samples.mean(axis=1), rate


def load_for_streaming(path) -> tuple[np.ndarray, int]:
    """A file's samples at a rate the daemon takes: its own, or 16 kHz for a rate not in
    protocol.SAMPLE_RATES (resampled here, whole file)."""
    return streamable(*read_audio(path), path)


def streamable(samples: np.ndarray, rate: int, name) -> tuple[np.ndarray, int]:
    """Decoded samples at a rate the daemon takes (see load_for_streaming)."""
    if len(samples) == 0:
        raise AudioError(f"{name} has no audio samples")
    if rate not in SAMPLE_RATES:
        return resample(samples, rate, FALLBACK_RATE), FALLBACK_RATE
    return samples, rate


def resample(samples: np.ndarray, rate: int, new_rate: int, zero_crossings: int = 6, rolloff: float = 0.99,
             rows: int = 1 << 14) -> np.ndarray:
    """A whole signal at another rate: band-limited (windowed-sinc, Hann window) interpolation, the
    method and parameters of torchaudio.functional.resample (and so of the daemon), in numpy. The
    signal is taken as zero outside; the result has ceil(len * new_rate / rate) samples."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == new_rate:
        return samples
    gcd = math.gcd(rate, new_rate)
    step, phases = rate // gcd, new_rate // gcd  # every `step` input samples give `phases` output samples
    cutoff = rolloff * min(1.0, new_rate / rate)  # of the input's Nyquist frequency
    reach = math.ceil(zero_crossings / cutoff)  # input samples each side of an output sample
    count = math.ceil(len(samples) * phases / step)
    blocks = math.ceil(count / phases)
    taps = np.arange(-reach, reach + step)  # around the start of a block: every phase's taps

    def weights(distance: np.ndarray) -> np.ndarray:
        t = np.clip(distance * cutoff, -zero_crossings, zero_crossings)
        return (np.sinc(t) * np.cos(t * math.pi / zero_crossings / 2) ** 2 * cutoff).astype(np.float32)

    padded = np.zeros((blocks - 1) * step + len(taps), dtype=np.float32)
    padded[reach:reach + len(samples)] = samples
    out = np.empty((blocks, phases), dtype=np.float32)
    if phases * len(taps) <= 1 << 20:  # one kernel row per phase, as torchaudio (polyphase)
        kernel = weights(taps[None, :] - (np.arange(phases) * step / phases)[:, None])
        windows = np.lib.stride_tricks.sliding_window_view(padded, len(taps))[::step]
        for first in range(0, blocks, rows):
            out[first:first + rows] = windows[first:first + rows] @ kernel.T
    else:  # rates with a small common divisor: the taps of each output sample, a few at a time
        out = out.reshape(-1)
        for first in range(0, len(out), rows):
            index = np.arange(first, min(first + rows, len(out)))
            position = (index // phases) * step + (index % phases) * step / phases  # in input samples
            nearest = np.floor(position).astype(np.int64)[:, None] + np.arange(-reach, reach + 1)
            out[index] = np.einsum("ij,ij->i", padded[nearest + reach], weights(nearest - position[:, None]))
    return out.reshape(-1)[:count]


def chunks(samples: np.ndarray, rate: int, chunk_ms: int | None):
    """Consecutive pieces of `chunk_ms` milliseconds (the last may be shorter); the whole
    signal as one piece when chunk_ms is None."""
    step = max(1, rate * chunk_ms // 1000) if chunk_ms else max(1, len(samples))
    for start in range(0, len(samples), step):
        yield samples[start:start + step]


def encode_chunks(samples: np.ndarray, rate: int, chunk_ms: int = 100, encoding: str = "pcm_s16le") -> list[bytes]:
    """Float samples as raw audio chunks of `chunk_ms` in `encoding` (protocol.ENCODINGS)."""
    if check_encoding(encoding) == "pcm_s16le":
        samples = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    else:
        samples = samples.astype("<f4")
    return [chunk.tobytes() for chunk in chunks(samples, rate, chunk_ms)]


def file_chunks(path, chunk_ms: int = 100, encoding: str = "pcm_s16le") -> tuple[list[bytes], int]:
    """A file as raw audio chunks of `chunk_ms` in `encoding`, and its sample rate."""
    samples, rate = load_for_streaming(path)
    return encode_chunks(samples, rate, chunk_ms, encoding), rate


async def paced(chunks: list[bytes], seconds_per_chunk: float) -> AsyncIterator[bytes]:
    """Chunks at real-time pace, as a microphone would send them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, chunk in enumerate(chunks):
        delay = start + index * seconds_per_chunk - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield chunk
