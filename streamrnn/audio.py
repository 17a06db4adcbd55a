"""Audio in, log-mel features out, in a streaming way.

Every stage keeps the samples it cannot use yet (a partial resampling
window, a partial STFT frame) for the next chunk, so feeding a signal in
chunks of any size gives the same features as feeding it whole.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio

# One file reader and one whole-file resampler (torchaudio's method, in numpy) for daemon and client;
# the streaming frontend below has its own resampler, chunk by chunk.
from streamrnn_client.audio import chunks, load_for_streaming, read_audio, resample  # noqa: F401
from streamrnn_client.protocol import AudioError, check_encoding, check_rate

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 80


def load_16k(path) -> np.ndarray:
    """A file's samples at 16 kHz, whatever its own rate."""
    samples, rate = load_for_streaming(path)
    return samples if rate == SAMPLE_RATE else resample(samples, rate, SAMPLE_RATE)


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """Raw little-endian PCM bytes to float32 samples in [-1, 1]."""
    if encoding == "pcm_s16le":
        if len(data) % 2:
            raise AudioError(f"pcm_s16le audio must have an even number of bytes, got {len(data)}")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "f32le":
        if len(data) % 4:
            raise AudioError(f"f32le audio must have a multiple of 4 bytes, got {len(data)}")
        return check_samples(np.frombuffer(data, dtype="<f4").astype(np.float32))
    check_encoding(encoding)


def check_samples(samples: np.ndarray) -> np.ndarray:
    if samples.ndim != 1:
        raise AudioError(f"audio must be one channel, got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise AudioError("audio contains NaN or infinite samples")
    return samples


class StreamingResampler:
    """torchaudio's windowed-sinc resampler, applied chunk by chunk."""

    def __init__(self, orig_rate: int, new_rate: int = SAMPLE_RATE):
        gcd = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // gcd, new_rate // gcd
        self.identity = self.orig == self.new
        if not self.identity:
            self.kernel, self.width = torchaudio.functional.functional._get_sinc_resample_kernel(
                self.orig, self.new, 1, 6, 0.99, "sinc_interp_hann", None, "cpu", torch.float32)
        else:
            self.width = 0
        self.buffer = np.zeros(self.width, dtype=np.float32)
        self.seen = 0
        self.emitted = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.identity:
            return samples
        self.seen += len(samples)
        self.buffer = np.concatenate([self.buffer, samples])
        return self._convolve()

    def flush(self) -> np.ndarray:
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        before = self.emitted
        self.buffer = np.concatenate([self.buffer, np.zeros(self.width + self.orig, dtype=np.float32)])
        out = self._convolve()
        return out[:max(math.ceil(self.new * self.seen / self.orig) - before, 0)]

    def _convolve(self) -> np.ndarray:
        span = self.kernel.shape[-1]
        steps = (len(self.buffer) - span) // self.orig + 1 if len(self.buffer) >= span else 0
        if steps == 0:
            return np.zeros(0, dtype=np.float32)
        used = self.buffer[: (steps - 1) * self.orig + span]
        x = torch.from_numpy(np.ascontiguousarray(used))[None, None]
        out = torch.nn.functional.conv1d(x, self.kernel, stride=self.orig)
        self.buffer = self.buffer[steps * self.orig:]
        out = out[0].transpose(0, 1).reshape(-1).numpy()
        self.emitted += len(out)
        return out


_MEL = torchaudio.functional.melscale_fbanks(
    N_FFT // 2 + 1, 20.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney")
_WINDOW = torch.hann_window(WINDOW, periodic=True)


def log_mel(frames: torch.Tensor) -> torch.Tensor:
    """(n, WINDOW) sample frames to (n, N_MELS) log-mel energies."""
    if len(frames) == 0:
        return torch.zeros(0, N_MELS)
    spectrum = torch.fft.rfft(frames * _WINDOW, n=N_FFT).abs().pow(2)
    return torch.clamp(spectrum @ _MEL, min=1e-10).log()


class StreamingFeatures:
    """16 kHz samples to log-mel frames; a partial frame waits for more samples."""

    def __init__(self):
        self.buffer = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> torch.Tensor:
        return log_mel(self.frames(samples))

    def frames(self, samples: np.ndarray) -> torch.Tensor:
        """The (n, WINDOW) sample frames that `samples` complete (log_mel them, one session's or many's)."""
        self.buffer = np.concatenate([self.buffer, samples])
        count = (len(self.buffer) - WINDOW) // HOP + 1 if len(self.buffer) >= WINDOW else 0
        if count == 0:
            return torch.zeros(0, WINDOW)
        frames = torch.from_numpy(self.buffer).unfold(0, WINDOW, HOP)[:count]
        self.buffer = self.buffer[count * HOP:]
        return frames


class Frontend:
    """Source-rate float samples to 16 kHz log-mel frames, chunk by chunk."""

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        self.sample_rate = check_rate(sample_rate)
        self.resampler = StreamingResampler(sample_rate)
        self.features = StreamingFeatures()

    def __call__(self, samples: np.ndarray) -> torch.Tensor:
        return log_mel(self.frames(samples))

    def flush(self) -> torch.Tensor:
        return log_mel(self.flush_frames())

    def frames(self, samples: np.ndarray) -> torch.Tensor:
        samples = check_samples(np.asarray(samples, dtype=np.float32))
        return self.features.frames(self.resampler(samples))

    def flush_frames(self) -> torch.Tensor:
        return self.features.frames(self.resampler.flush())


def file_features(path) -> torch.Tensor:
    """Whole-file log-mel features, exactly as the streaming frontend makes them."""
    samples, rate = read_audio(path)
    frontend = Frontend(rate)
    return torch.cat([frontend(samples), frontend.flush()])
