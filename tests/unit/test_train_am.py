"""`streamrnn train am` end to end over a tiny mix of sources: a weighted manifest, a
LibriSpeech-layout folder, synthetic speech, with noise and reverberation from the config."""
import json
import shutil
import subprocess
import sys

import torch
from support import SPEECH, make_acoustic, missing, needs_shared_data
from test_sources import make_librispeech

from streamrnn.checkpoint import load_model
from streamrnn.config import model_path
from streamrnn.train.synth import synthesize
from streamrnn.wordsearch import read_vocabulary


def tiny_manifest(path, train=4, dev=2):
    records = [json.loads(line) for line in (SPEECH / "speechocean762.jsonl").read_text().splitlines()]
    chosen = [r for r in records if r["speaker"] != "SPEAKER0001"][:train]
    chosen += [r for r in records if r["speaker"] == "SPEAKER0001"][:dev]
    path.write_text("".join(json.dumps(dict(r, audio=str(SPEECH / r["audio"]))) + "\n" for r in chosen))
    return path


def test_one_epoch_over_mixed_sources_writes_a_checkpoint(tmp_path):
    needs_shared_data()
    voices = [v for v, tool in (("espeak", "espeak-ng"), ("flite", "flite")) if shutil.which(tool)]
    if not voices:
        missing("neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)")
    synthetic = synthesize([str(SPEECH / "fsdd.jsonl")], tmp_path / "synth", 4, voices, [0.9, 1.1], min_words=1)
    make_librispeech(tmp_path / "ls", count=3)
    config = tmp_path / "config.toml"
    config.write_text('[training]\nnoise_probability = 1.0\nnoise_snr_db = [10, 20]\naugmented_copies = 1\n'
                      f'synthetic = "{synthetic}"\nsynthetic_weight = 0.5\n')
    command = [sys.executable, "-m", "streamrnn", "--config", str(config), "train", "am",
               f"{tiny_manifest(tmp_path / 'so.jsonl')}:2", f"librispeech:{tmp_path / 'ls'}:train-clean-100",
               "--reverb-probability", "0.5", "--hidden", "16", "--layers", "1", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert ("train: so 4 x2, librispeech-train-clean-100 3 x1, synth-manifest 4 x0.5; "
            "3 speeds, 1 augmented copies; dev: 2") in result.stdout
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert checkpoint["state"]["epoch"] == 1
    assert (checkpoint["args"]["noise_probability"], checkpoint["args"]["reverb_probability"]) == (1.0, 0.5)
    assert load_model("acoustic", tmp_path / "run" / "am.pt").config.hidden == 16
    assert len(list((tmp_path / "cache").glob("*-aug0-*.pt"))) == 3


def test_bad_training_option_is_named(tmp_path):
    needs_shared_data()
    command = [sys.executable, "-m", "streamrnn", "train", "am", str(SPEECH / "fsdd.jsonl"),
               "--noise-probability", "2", "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "noise_probability must be 0..1" in result.stderr


def test_phone_targets_train_a_model_that_names_its_tokens(tmp_path):
    needs_shared_data()
    command = [sys.executable, "-m", "streamrnn", "train", "am", str(tiny_manifest(tmp_path / "so.jsonl")),
               "--targets", "phones", "--speeds", "1.0", "--hidden", "16", "--layers", "1", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "targets: phones (41 tokens)" in result.stdout and "dev_per" in result.stdout
    model = load_model("acoustic", tmp_path / "run" / "am.pt")
    assert model.config.targets == "phones" and model.config.tokens[:3] == ["<blank>", "|", "AA"]
    assert model.output.out_features == 41 and "dev_per_greedy" in model.meta
    resumed = subprocess.run(command[:-4] + ["--targets", "chars", "--resume"] + command[-4:],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode != 0 and "trained with --targets phones" in resumed.stderr
    config = tmp_path / "phones.toml"
    config.write_text(f'[model]\nacoustic_model = "{tmp_path / "run" / "am.pt"}"\n')
    audio = json.loads((tmp_path / "so.jsonl").read_text().splitlines()[-1])["audio"]
    decoded = subprocess.run([sys.executable, "-m", "streamrnn", "--config", str(config), "transcribe", audio, "--json"],
                             capture_output=True, text=True, timeout=300)
    assert decoded.returncode == 0, decoded.stderr  # the lexicon search spells words in phones
    assert "no pronunciation" not in decoded.stderr  # the shipped words.dict has what CMUdict lacks
    vocabulary = set(read_vocabulary(model_path("builtin", "words.txt")))
    finals = [event for event in map(json.loads, decoded.stdout.splitlines()) if event["type"] == "final"]
    assert all(word["word"] in vocabulary for final in finals for word in final["words"])


def test_init_fine_tunes_a_trained_model_keeping_its_size(tmp_path):
    needs_shared_data()
    start = make_acoustic(tmp_path)  # 2 x 48 LSTM
    command = [sys.executable, "-m", "streamrnn", "train", "am", str(tiny_manifest(tmp_path / "so.jsonl")),
               "--init", str(start), "--speeds", "1.0", "--epochs", "1", "--lr", "3e-4",
               "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "init: " in result.stdout and "lstm 2 x 48" in result.stdout
    tuned, before = load_model("acoustic", tmp_path / "run" / "am.pt"), load_model("acoustic", start)
    assert (tuned.config.hidden, tuned.config.layers) == (48, 2)
    assert torch.equal(tuned.mean, before.mean)  # the features are normalised as the model learnt them
    assert not torch.equal(tuned.output.weight, before.output.weight)
    phones = subprocess.run(command[:-4] + ["--targets", "phones", "--out", str(tmp_path / "run2"),
                                            "--cache", str(tmp_path / "cache")], capture_output=True, text=True)
    assert phones.returncode != 0 and "emits chars, not --targets phones" in phones.stderr


def test_widening_the_lookahead_keeps_what_the_model_computes(tmp_path, noise):
    from streamrnn.audio import Frontend
    from streamrnn.train.am import widen_lookahead
    model = load_model("acoustic", make_acoustic(tmp_path))
    frontend = Frontend(16000)
    features = torch.cat([frontend(noise), frontend.flush()])[None]
    with torch.inference_mode():
        before = model(features)[0]
        widen_lookahead(model, 4)
        after = model(features)[0]
    assert model.config.lookahead == 4 and model.project.in_features == 80 * 3 * 5
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_init_with_lookahead_trains_a_model_that_streams(tmp_path):
    needs_shared_data()
    start = make_acoustic(tmp_path)
    manifest = tiny_manifest(tmp_path / "so.jsonl")
    command = [sys.executable, "-m", "streamrnn", "train", "am", str(manifest), "--init", str(start),
               "--lookahead", "2", "--speeds", "1.0", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "lstm 2 x 48, lookahead 2" in result.stdout
    assert load_model("acoustic", tmp_path / "run" / "am.pt").config.lookahead == 2
    config = tmp_path / "lookahead.toml"
    config.write_text(f'[model]\nacoustic_model = "{tmp_path / "run" / "am.pt"}"\n')
    audio = json.loads(manifest.read_text().splitlines()[-1])["audio"]
    decoded = subprocess.run([sys.executable, "-m", "streamrnn", "--config", str(config), "transcribe", audio, "--json"],
                             capture_output=True, text=True, timeout=300)
    assert decoded.returncode == 0, decoded.stderr
    assert all(json.loads(line)["type"] in ("partial", "final", "suggestions") for line in decoded.stdout.splitlines())


def test_the_last_epochs_are_kept_and_average_into_one_model(tmp_path):
    needs_shared_data()
    start = make_acoustic(tmp_path)
    command = [sys.executable, "-m", "streamrnn", "train", "am", str(tiny_manifest(tmp_path / "so.jsonl")),
               "--init", str(start), "--speeds", "1.0", "--epochs", "3", "--keep-epochs", "2",
               "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    kept = sorted((tmp_path / "run" / "epochs").glob("*.pt"))
    assert [path.name for path in kept] == ["epoch-001.pt", "epoch-002.pt"]
    averaged = tmp_path / "averaged.pt"
    result = subprocess.run([sys.executable, "-m", "streamrnn", "train", "average", *map(str, kept), "--out", str(averaged)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    first, second = (load_model("acoustic", path).output.weight for path in kept)
    torch.testing.assert_close(load_model("acoustic", averaged).output.weight, (first + second) / 2,
                               atol=1e-3, rtol=1e-3)  # the files hold float16
    mismatched = subprocess.run([sys.executable, "-m", "streamrnn", "train", "average", str(kept[0]),
                                 str(model_path("builtin", "am.pt")), "--out", str(averaged)],
                                capture_output=True, text=True, timeout=300)
    assert mismatched.returncode != 0 and "only checkpoints of one run can be averaged" in mismatched.stderr


def test_sources_without_dev_utterances_are_refused(tmp_path):
    needs_shared_data()
    command = [sys.executable, "-m", "streamrnn", "train", "am", str(tiny_manifest(tmp_path / "so.jsonl", dev=0)),
               "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no dev utterances in " in result.stderr.strip().splitlines()[-1]
