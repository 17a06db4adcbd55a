"""`streamrnn eval`: WER, CER and RTF of the streaming engine over a manifest."""
from __future__ import annotations

import json
import time

from .data import load_manifest
from .engine import Recognizer
from .metrics import ErrorRate
from .transcribe import final_text, stream_file


def evaluate(recognizer: Recognizer, manifest, split: str = "all", chunk_ms: int = 100,
             hyps_path=None, limit: int = 0) -> dict:
    utterances = load_manifest(manifest, split)[: limit or None]
    if not utterances:
        raise ValueError(f"{manifest}: no utterances in split {split!r}")
    errors, audio_s, compute_s = ErrorRate(), 0.0, 0.0
    out = open(hyps_path, "w") if hyps_path else None
    try:
        for utterance in utterances:
            started = time.perf_counter()
            hypothesis = final_text(stream_file(recognizer, utterance.audio, chunk_ms, suggestions=0))
            compute_s += time.perf_counter() - started
            audio_s += utterance.duration
            errors.add(utterance.text, hypothesis)
            if out:
                out.write(json.dumps({"audio": str(utterance.audio), "ref": utterance.text, "hyp": hypothesis}) + "\n")
    finally:
        if out:
            out.close()
    return {"utterances": len(utterances), "wer": errors.wer, "cer": errors.cer,
            "rtf": compute_s / max(audio_s, 1e-9), "audio_hours": audio_s / 3600}
