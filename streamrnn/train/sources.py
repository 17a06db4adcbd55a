"""Training sources for `streamrnn train am`: JSONL manifests and LibriSpeech folders,
each with a weight (how many times an epoch sees it)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrnn.manifest import Utterance, load_manifest, split_of
from streamrnn.tokens import normalize

LIBRISPEECH_PREFIX = "librispeech:"


@dataclass
class Source:
    name: str  # names its feature cache files
    train: list[Utterance]
    dev: list[Utterance]
    weight: float = 1.0


def split_weight(spec: str) -> tuple[str, float]:
    """'SPEC' or 'SPEC:WEIGHT'; a last part that is not a number belongs to SPEC."""
    head, sep, tail = spec.rpartition(":")
    try:
        weight = float(tail) if sep else 1.0
    except ValueError:
        return spec, 1.0
    if not (weight > 0 and math.isfinite(weight)):
        raise ValueError(f"{spec}: a source's weight must be positive, got {tail}")
    return (head if sep else spec), weight


def load_source(spec: str) -> Source:
    """A manifest (`PATH.jsonl[:WEIGHT]`) or LibriSpeech (`librispeech:ROOT:SUBSET[:WEIGHT]`)."""
    spec, weight = split_weight(spec)
    if spec.startswith(LIBRISPEECH_PREFIX):
        root, sep, subset = spec[len(LIBRISPEECH_PREFIX):].rpartition(":")
        if not sep or not root:
            raise ValueError(f"{spec}: write a LibriSpeech source as librispeech:ROOT:SUBSET, "
                             "e.g. librispeech:/data:train-clean-100")
        utterances = librispeech_utterances(Path(root), subset)
        return Source(f"librispeech-{subset}", [u for u in utterances if u.split == "train"],
                      [u for u in utterances if u.split == "dev"], weight)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{spec}: no such manifest")
    # `streamrnn synth` writes OUT/manifest.jsonl: such a source is named after its folder.
    name = f"{path.parent.name}-{path.stem}" if path.stem == "manifest" else path.stem
    return Source(name, load_manifest(path, "train"), load_manifest(path, "dev"), weight)


def librispeech_utterances(root: Path, subset: str) -> list[Utterance]:
    """A LibriSpeech subset on disk (ROOT/LibriSpeech/SUBSET/...), read with torchaudio's dataset
    class without downloading. Dev and test subsets are dev data; so are held-out speakers."""
    from torchaudio.datasets import LIBRISPEECH
    try:
        dataset = LIBRISPEECH(str(root), url=subset, download=False)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"LibriSpeech {subset} at {root}: {err}") from err
    split = "dev" if subset.startswith(("dev-", "test-")) else "train"
    utterances = []
    for index in range(len(dataset)):
        relative, rate, transcript, speaker, _, _ = dataset.get_metadata(index)
        audio = root / "LibriSpeech" / relative
        record = {"speaker": str(speaker), "split": split}
        utterances.append(Utterance(audio, normalize(transcript), 0.0, str(speaker), split_of(record)))
    return utterances


def epoch_order(sources: list[Source], seed: int, epoch: int) -> list[int]:
    """Indices into the concatenated train utterances of all sources for one epoch: each source
    whole int(weight) times, then a random fraction of it for the rest of its weight."""
    indices, offset = [], 0
    for number, source in enumerate(sources):
        count = len(source.train)
        whole, fraction = int(source.weight), source.weight - int(source.weight)
        indices += list(range(offset, offset + count)) * whole
        if fraction > 0:
            rng = np.random.default_rng([seed, epoch, number])
            indices += sorted((offset + rng.choice(count, size=round(fraction * count), replace=False)).tolist())
        offset += count
    return indices
