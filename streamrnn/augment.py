"""Noise and reverberation for training audio, made without any external corpus:
babble from other training utterances, coloured noise, and synthetic room
impulse responses (exponentially decaying noise)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .audio import SAMPLE_RATE

NOISE_TYPES = ("babble", "white", "pink", "brown")
# Spectral slope of each coloured noise: power falls as 1/f**alpha.
COLOUR_ALPHA = {"white": 0.0, "pink": 1.0, "brown": 2.0}
BABBLE_TALKERS = (3, 7)
# Direct-to-reverberant energy ratio of a synthetic room, in dB (typical of
# a speaker within a few metres of the microphone).
DIRECT_TO_REVERB_DB = (0.0, 10.0)


@dataclass
class Augmentation:
    noise_probability: float = 0.0
    noise_types: tuple[str, ...] = NOISE_TYPES
    snr_db: tuple[float, float] = (5.0, 25.0)
    reverb_probability: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.8)

    def __post_init__(self):
        for name in ("noise_probability", "reverb_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be 0..1, got {getattr(self, name)}")
        unknown = set(self.noise_types) - set(NOISE_TYPES)
        if unknown or not self.noise_types:
            raise ValueError(f"noise_types must be some of {', '.join(NOISE_TYPES)}, got {list(self.noise_types)}")
        if self.rt60_s[0] < 0.01:
            raise ValueError(f"reverb_rt60_s must be at least 0.01 s, got {list(self.rt60_s)}")

    @classmethod
    def from_config(cls, training) -> "Augmentation":
        """From the [training] section (or its command-line overrides)."""
        return cls(float(training.noise_probability), tuple(training.noise_types),
                   range_of("noise_snr_db", training.noise_snr_db), float(training.reverb_probability),
                   range_of("reverb_rt60_s", training.reverb_rt60_s))

    @property
    def active(self) -> bool:
        return self.noise_probability > 0 or self.reverb_probability > 0


def range_of(name: str, values) -> tuple[float, float]:
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or values[0] > values[1]:
        raise ValueError(f"{name} must be [low, high], got {list(values)}")
    return float(values[0]), float(values[1])


def power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64)))


def coloured_noise(length: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as 1/f**alpha (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length)
    frequencies[0] = frequencies[1] if length > 1 else 1.0
    noise = np.fft.irfft(spectrum * frequencies ** (-alpha / 2), n=length)
    return (noise / np.sqrt(max(power(noise), 1e-20))).astype(np.float32)


def babble(length: int, speech_bank: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A few talkers from the bank talking at once, each from a random offset, looped to length."""
    mix = np.zeros(length, dtype=np.float32)
    for _ in range(int(rng.integers(*BABBLE_TALKERS))):
        talker = speech_bank[int(rng.integers(len(speech_bank)))]
        start = int(rng.integers(len(talker)))
        segment = np.resize(np.roll(talker, -start), length)
        mix += segment / np.sqrt(max(power(segment), 1e-20))
    return mix


def add_noise(samples: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """samples + noise scaled so that speech power / noise power is snr_db."""
    scale = np.sqrt(power(samples) / max(power(noise), 1e-20) / 10 ** (snr_db / 10))
    return (samples + scale * noise).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A direct path followed by a diffuse tail of Gaussian noise decaying 60 dB in rt60_s."""
    times = np.arange(1, int(rt60_s * rate)) / rate
    tail = rng.standard_normal(len(times)) * 10 ** (-3 * times / rt60_s)
    direct_to_reverb = 10 ** (rng.uniform(*DIRECT_TO_REVERB_DB) / 10)
    tail *= np.sqrt(1.0 / direct_to_reverb / max(power(tail) * len(tail), 1e-20))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def reverberate(samples: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """samples convolved with rir, cut to their length and kept at their power."""
    wet = torch.fft.irfft(torch.fft.rfft(torch.from_numpy(samples), n=len(samples) + len(rir))
                          * torch.fft.rfft(torch.from_numpy(rir), n=len(samples) + len(rir)))
    wet = wet[:len(samples)].numpy()
    return (wet * np.sqrt(power(samples) / max(power(wet), 1e-20))).astype(np.float32)


def draw(settings: Augmentation, rng: np.random.Generator) -> dict:
    """What to do to one utterance: reverberation (rt60_s) and noise (type, snr_db), each by its
    probability; empty when it stays clean."""
    plan = {}
    if rng.random() < settings.reverb_probability:
        plan["rt60_s"] = float(rng.uniform(*settings.rt60_s))
    if rng.random() < settings.noise_probability:
        plan["noise"] = settings.noise_types[int(rng.integers(len(settings.noise_types)))]
        plan["snr_db"] = float(rng.uniform(*settings.snr_db))
    return plan


def apply(samples: np.ndarray, plan: dict, rng: np.random.Generator, speech_bank: list[np.ndarray]) -> np.ndarray:
    """Reverberation, then noise, as drawn by `draw`."""
    if "rt60_s" in plan:
        samples = reverberate(samples, room_impulse_response(plan["rt60_s"], rng))
    if "noise" in plan:
        if plan["noise"] == "babble":
            noise = babble(len(samples), speech_bank, rng)
        else:
            noise = coloured_noise(len(samples), COLOUR_ALPHA[plan["noise"]], rng)
        samples = add_noise(samples, noise, plan["snr_db"])
    return samples
