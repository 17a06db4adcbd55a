"""Noise and reverberation for training audio, made without any external corpus:
babble from other training utterances, coloured noise, and synthetic room
impulse responses (exponentially decaying noise)."""
from __future__ import annotations

import numpy as np
import torch

from streamrnn.audio import SAMPLE_RATE
from streamrnn.config import Augmentation

# Spectral slope of each coloured noise: power falls as 1/f**alpha.
COLOUR_ALPHA = {"white": 0.0, "pink": 1.0, "brown": 2.0}
BABBLE_TALKERS = (3, 7)
# Direct-to-reverberant energy ratio of a synthetic room, in dB (typical of
# a speaker within a few metres of the microphone).
DIRECT_TO_REVERB_DB = (0.0, 10.0)


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
