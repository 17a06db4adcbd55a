"""Speech manifests (JSONL, one utterance a line) and their dev/train split."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from streamrnn.tokens import normalize

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
