"""Noise and reverberation for training: measured on real speech and synthetic signals."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from support import SPEECH, needs_shared_data, speech_sample

from streamrnn.manifest import load_manifest
from streamrnn.train.augment import Augmentation, apply, coloured_noise, draw, power, reverberate, room_impulse_response
from streamrnn.train.features import augmented_features, cached_features, speech_16k, speech_bank


@pytest.fixture(scope="module")
def speech():
    return speech_16k(speech_sample("speechocean762", 3)[0], 1.0)


@pytest.fixture(scope="module")
def bank():
    needs_shared_data()
    return speech_bank(load_manifest(SPEECH / "speechocean762.jsonl", "train")[:40], seed=0)


def band_power_db(samples: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    frequencies = np.fft.rfftfreq(len(samples), 1 / 16000)
    return 10 * np.log10(spectrum[(frequencies >= low) & (frequencies < high)].mean())


@pytest.mark.parametrize("noise_type", ["babble", "white", "pink", "brown"])
def test_noise_is_added_at_the_drawn_snr(speech, bank, noise_type):
    settings = Augmentation(noise_probability=1.0, noise_types=(noise_type,), snr_db=(3.0, 12.0))
    rng = np.random.default_rng(1)
    for _ in range(3):
        plan = draw(settings, rng)
        noisy = apply(speech, plan, rng, bank)
        measured = 10 * np.log10(power(speech) / power(noisy - speech))
        assert plan["noise"] == noise_type and 3.0 <= plan["snr_db"] <= 12.0
        assert measured == pytest.approx(plan["snr_db"], abs=0.05)


@pytest.mark.parametrize("noise_type, alpha", [("white", 0), ("pink", 1), ("brown", 2)])
def test_coloured_noise_falls_by_its_slope(noise_type, alpha):
    noise = coloured_noise(16000 * 8, alpha, np.random.default_rng(0))
    # Bands 16 times apart in frequency: power density falls 10 * alpha * log10(16) dB.
    drop = band_power_db(noise, 250, 500) - band_power_db(noise, 4000, 8000)
    assert drop == pytest.approx(10 * alpha * np.log10(16), abs=1.5)


def test_babble_is_speech_not_flat_noise(bank):
    babble = apply(np.ones(16000 * 4, dtype=np.float32) * 1e-3, {"noise": "babble", "snr_db": -30.0},
                   np.random.default_rng(0), bank)
    # Speech has far more energy at 250-1000 Hz than at 4-8 kHz; white noise has the same density.
    assert band_power_db(babble, 250, 1000) - band_power_db(babble, 4000, 8000) > 15


@pytest.mark.parametrize("rt60", [0.3, 0.6, 0.9])
def test_room_decays_60_db_in_its_rt60(rt60):
    rir = room_impulse_response(rt60, np.random.default_rng(0))
    # Schroeder backward integration; the slope from -5 to -25 dB extrapolated to 60 dB (T20).
    decay = 10 * np.log10(np.cumsum(rir[::-1] ** 2)[::-1] / np.sum(rir[1:] ** 2) + 1e-30)
    tail = decay[1:]
    t5, t25 = np.argmax(tail <= -5) / 16000, np.argmax(tail <= -25) / 16000
    assert 3 * (t25 - t5) == pytest.approx(rt60, rel=0.1)


def test_reverberation_keeps_length_and_level_but_smears(speech):
    wet = reverberate(speech, room_impulse_response(0.6, np.random.default_rng(0)))
    assert len(wet) == len(speech) and power(wet) == pytest.approx(power(speech), rel=1e-3)
    correlation = np.corrcoef(wet, speech)[0, 1]
    assert 0.2 < correlation < 0.98


def test_augmented_copies_are_cached_and_differ_from_clean(tmp_path):
    needs_shared_data()
    utterances = load_manifest(SPEECH / "speechocean762.jsonl", "train")[:4]
    settings = Augmentation(noise_probability=1.0, noise_types=("white",), snr_db=(0.0, 0.0))
    clean = cached_features(utterances, 1.0, tmp_path, "so")
    noisy = augmented_features(utterances, settings, [1.0], 0, 0, tmp_path, "so")
    assert all(isinstance(f, torch.Tensor) and f.shape == c.shape for f, c in zip(noisy, clean))
    # 0 dB of white noise fills the quiet high-frequency bands of speech.
    assert all((f.float()[:, 60:] - c.float()[:, 60:]).mean() > 1.0 for f, c in zip(noisy, clean))
    again = augmented_features(utterances, settings, [1.0], 0, 0, tmp_path, "so")
    assert all(torch.equal(a, b) for a, b in zip(noisy, again))
    other_copy = augmented_features(utterances, settings, [1.0], 1, 0, tmp_path, "so")
    assert not all(torch.equal(a, b) for a, b in zip(noisy, other_copy))
    assert len(list(tmp_path.glob("so-4-aug*.pt"))) == 2


def test_a_copy_that_drew_nothing_names_its_clean_speed(tmp_path):
    needs_shared_data()
    utterances = load_manifest(SPEECH / "speechocean762.jsonl", "train")[:3]
    settings = Augmentation(noise_probability=0.0, reverb_probability=0.0)
    variants = augmented_features(utterances, settings, [0.9, 1.1], 0, 0, tmp_path, "so")
    assert len(variants) == 3 and all(isinstance(v, float) for v in variants) and set(variants) <= {0.9, 1.1}


def test_a_cache_file_made_from_other_audio_is_not_reused(tmp_path):
    needs_shared_data()
    utterances = load_manifest(SPEECH / "speechocean762.jsonl", "train")
    first = cached_features(utterances[:2], 1.0, tmp_path, "same-name")
    second = cached_features(utterances[2:4], 1.0, tmp_path, "same-name")
    assert first[0].shape != second[0].shape or not torch.equal(first[0], second[0])
    legacy = tmp_path / "legacy-2-speed1.0.pt"
    torch.save(["made before stamps"], legacy)
    assert cached_features(utterances[:2], 1.0, tmp_path, "legacy") == ["made before stamps"]


@pytest.mark.parametrize("settings, message", [
    (dict(noise_probability=1.5), "noise_probability must be 0..1"),
    (dict(noise_types=("rain",)), "noise_types must be some of"),
    (dict(rt60_s=(0.0, 0.5)), "reverb_rt60_s must be at least"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**settings)


def test_feature_cache_of_thousands_of_utterances_needs_no_file_per_utterance(tmp_path):
    """Workers hand back arrays, not tensors (which travel as open files): with a small open-file
    limit, as on many servers, more utterances than the limit still get their features."""
    needs_shared_data()
    script = f"""
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from streamrnn.manifest import load_manifest
from streamrnn.train.features import cached_features
utterances = load_manifest("{SPEECH / 'fsdd.jsonl'}", "train")[:400]
features = cached_features(utterances, 1.0, Path("{tmp_path}"), "fsdd", workers=2)
print(len(features), sum(len(f) for f in features))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    count, frames = map(int, done.stdout.split())
    assert count == 400 and frames > 400 * 20
