"""Speech manifests, the dev/train split, and cached features for training."""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from .audio import SAMPLE_RATE, Frontend, read_audio
from .tokens import normalize

# Held out from training, with LibriSpeech's own "dev" speakers (19, 2136):
# a tenth of the speechocean762 speakers and one FSDD speaker.
HELD_OUT_SPEAKERS = frozenset({
    "SPEAKER0001", "SPEAKER0075", "SPEAKER0739", "SPEAKER1092", "SPEAKER1419",
    "SPEAKER2129", "SPEAKER2380", "SPEAKER3021", "SPEAKER3837", "SPEAKER6010",
    "SPEAKER8585", "SPEAKER9613", "SPEAKER9639", "theo"})
SPLITS = ("all", "train", "dev")


@dataclass
class Utterance:
    audio: Path
    text: str
    duration: float
    speaker: str
    split: str


def split_of(record: dict) -> str:
    if record.get("split") == "dev" or str(record.get("speaker")) in HELD_OUT_SPEAKERS:
        return "dev"
    return record.get("split", "train")


def load_manifest(path, split: str = "all") -> list[Utterance]:
    """JSONL lines with audio (relative to the manifest) and text; filtered by split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    utterances = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            utterance = Utterance(path.parent / record["audio"], normalize(record["text"]),
                                  float(record.get("duration", 0.0)), str(record.get("speaker", "")),
                                  split_of(record))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not a manifest line ({err})") from err
        if split in ("all", utterance.split):
            utterances.append(utterance)
    return utterances


def perturbed_features(path: Path, speed: float) -> torch.Tensor:
    samples, rate = read_audio(path)
    frontend = Frontend(rate)
    samples16 = torch.cat([torch.from_numpy(frontend.resampler(samples)),
                           torch.from_numpy(frontend.resampler.flush())])
    if speed != 1.0:
        samples16 = torchaudio.functional.resample(samples16, round(SAMPLE_RATE * speed), SAMPLE_RATE)
    return frontend.features(samples16.numpy()).half()


def _features_job(args):
    torch.set_num_threads(1)
    return perturbed_features(*args)


def cached_features(utterances: list[Utterance], speed: float, cache: Path, name: str,
                    workers: int = 2) -> list[torch.Tensor]:
    """Log-mel features (float16) of each utterance at a speed factor, computed once."""
    target = cache / f"{name}-{len(utterances)}-speed{speed}.pt"
    if target.exists():
        return torch.load(target)
    jobs = [(u.audio, speed) for u in utterances]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        features = pool.map(_features_job, jobs, chunksize=16)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(features, target)
    return features


def parse_weighted(spec: str) -> tuple[Path, float]:
    """'manifest.jsonl' or 'manifest.jsonl:2' (weight = how often each epoch sees it)."""
    path, sep, weight = spec.rpartition(":")
    try:
        return (Path(path), float(weight)) if sep else (Path(spec), 1.0)
    except ValueError:
        return Path(spec), 1.0


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
