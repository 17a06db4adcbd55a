"""Features of training speech: speed perturbation, augmentation, and their cache on disk."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
import torchaudio

from streamrnn.audio import SAMPLE_RATE, Frontend, StreamingFeatures, read_audio
from streamrnn.manifest import Utterance
from streamrnn.train.augment import Augmentation, apply, draw

# Bump when augmented features change for the same settings, so old cache files are not reused.
AUGMENT_VERSION = 1
BANK_UTTERANCES = 16
# Fewer feature jobs than this run in this process: starting workers would take longer.
SMALL_JOB = 64


def speech_16k(path: Path, speed: float) -> np.ndarray:
    """An audio file as 16 kHz samples, sped up by `speed` (which also shifts the pitch)."""
    samples, rate = read_audio(path)
    frontend = Frontend(rate)
    samples16 = torch.cat([torch.from_numpy(frontend.resampler(samples)),
                           torch.from_numpy(frontend.resampler.flush())])
    if speed != 1.0:
        samples16 = torchaudio.functional.resample(samples16, round(SAMPLE_RATE * speed), SAMPLE_RATE)
    return samples16.numpy()


def features_16k(samples16: np.ndarray) -> torch.Tensor:
    return StreamingFeatures()(samples16).half()


def perturbed_features(path: Path, speed: float) -> torch.Tensor:
    return features_16k(speech_16k(path, speed))


def _features_job(args) -> np.ndarray:
    return perturbed_features(*args).numpy()


def cached_features(utterances: list[Utterance], speed: float, cache: Path, name: str,
                    workers: int = os.cpu_count() or 2) -> list[torch.Tensor]:
    """Log-mel features (float16) of each utterance at a speed factor, computed once."""
    target = cache / f"{name}-{len(utterances)}-speed{speed}.pt"
    features = load_cached(target, utterances)
    if features is None:
        features = [torch.from_numpy(f) for f in
                    parallel_map(_features_job, [(u.audio, speed) for u in utterances], workers)]
        save_cached(target, features, utterances)
    return features


def parallel_map(function, jobs: list, workers: int, initializer=None, initargs=()) -> list:
    """function over jobs in worker processes; in this one when there are only a few. Jobs
    should return numpy arrays, not tensors: tensors travel back as file descriptors, and
    thousands of them exhaust the open-file limit."""
    if len(jobs) < SMALL_JOB:
        if initializer:
            initializer(*initargs)
        return [function(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers, _start_worker, (initializer, initargs)) as pool:
        return pool.map(function, jobs, chunksize=16)


def _start_worker(initializer, initargs) -> None:
    torch.set_num_threads(1)
    if initializer:
        initializer(*initargs)


def fingerprint(utterances: list[Utterance]) -> str:
    return hashlib.sha1("\n".join(str(u.audio) for u in utterances).encode()).hexdigest()


def load_cached(target: Path, utterances: list[Utterance]):
    """A cache file's contents, unless it was made from other audio files under the same name.
    (Files from before the .sha1 stamps existed are trusted.)"""
    stamp = target.with_suffix(".sha1")
    if target.exists() and (not stamp.exists() or stamp.read_text() == fingerprint(utterances)):
        return torch.load(target)
    return None


def save_cached(target: Path, contents, utterances: list[Utterance]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(contents, target)
    target.with_suffix(".sha1").write_text(fingerprint(utterances))


def speech_bank(utterances: list[Utterance], seed: int) -> list[np.ndarray]:
    """A few training utterances at 16 kHz, the talkers that babble noise is made of."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(utterances), size=min(BANK_UTTERANCES, len(utterances)), replace=False)
    return [speech_16k(utterances[int(i)].audio, 1.0) for i in sorted(chosen)]


_AUGMENT_JOB = {}


def _start_augment_worker(settings: Augmentation, speeds: list[float], seed: int, copy: int, bank) -> None:
    _AUGMENT_JOB.update(settings=settings, speeds=speeds, seed=seed, copy=copy, bank=bank)


def _augmented_job(args) -> torch.Tensor | float:
    index, path = args
    job = _AUGMENT_JOB
    rng = np.random.default_rng([job["seed"], job["copy"], index])
    speed = job["speeds"][int(rng.integers(len(job["speeds"])))]
    plan = draw(job["settings"], rng)
    if not plan:
        return speed
    return features_16k(apply(speech_16k(path, speed), plan, rng, job["bank"])).numpy()


def augmented_features(utterances: list[Utterance], settings: Augmentation, speeds: list[float], copy: int,
                       seed: int, cache: Path, name: str,
                       workers: int = os.cpu_count() or 2) -> list[torch.Tensor | float]:
    """One augmented version of each utterance (random speed, then reverberation and noise each
    with its probability), computed once. An utterance that drew no augmentation is its speed
    factor instead of features: use the clean features at that speed."""
    key = json.dumps([AUGMENT_VERSION, dataclasses.asdict(settings), list(speeds), seed])
    target = cache / f"{name}-{len(utterances)}-aug{copy}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    variants = load_cached(target, utterances)
    if variants is None:
        bank = speech_bank(utterances, seed) if "babble" in settings.noise_types else []
        variants = parallel_map(_augmented_job, list(enumerate(u.audio for u in utterances)), workers,
                                _start_augment_worker, (settings, list(speeds), seed, copy, bank))
        variants = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in variants]
        save_cached(target, variants, utterances)
    return variants


def normalization_stats(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    total = torch.cat([f.float() for f in features])
    return total.mean(0), total.std(0)


def length_batches(lengths: list[int], max_frames: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices grouped by similar length, each batch at most max_frames of padded frames."""
    order = np.argsort(np.array(lengths) + rng.uniform(0, 50, len(lengths)))
    batches, current, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, lengths[index])
        if current and longest_if_added * (len(current) + 1) > max_frames:
            batches.append(current)
            current, longest_if_added = [], lengths[index]
        current.append(int(index))
        longest = longest_if_added
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches
