"""The command line, run as a user would run it."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile


def streamrnn(*args, config=None):
    command = [sys.executable, "-m", "streamrnn"] + (["--config", str(config)] if config else []) + list(args)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_config_file(tiny_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "config.toml"
    path.write_text(f'[model]\nacoustic_model = "{tiny_models["lstm"]}"\nlanguage_model = "{tiny_models["lm"]}"\n')
    return path


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    paths = []
    for index, rate in enumerate((16000, 44100)):
        path = folder / f"noise{index}.wav"
        stereo = (rng.standard_normal((rate, 2)) * 0.1).astype(np.float32)
        soundfile.write(path, stereo, rate)
        paths.append(path)
    return paths


def test_transcribe_json_prints_events(tiny_config_file, wav_files):
    result = streamrnn("transcribe", *map(str, wav_files), "--json", "--chunk-ms", "50", config=tiny_config_file)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["file"] for e in events} == set(map(str, wav_files))
    assert {e["type"] for e in events} <= {"partial", "final", "suggestions"}
    assert any(e["type"] == "final" for e in events)


def test_eval_prints_wer_cer_rtf(tiny_config_file, wav_files, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(p), "text": "HELLO WORLD", "duration": 1.0,
                                            "speaker": "x", "split": "dev"}) + "\n" for p in wav_files))
    hyps = tmp_path / "hyps.jsonl"
    result = streamrnn("eval", str(manifest), "--hyps", str(hyps), config=tiny_config_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("WER ") and lines[1].endswith("%")
    assert lines[2].startswith("CER ") and lines[3].startswith("RTF ")
    assert [json.loads(line)["ref"] for line in hyps.read_text().splitlines()] == ["HELLO WORLD"] * 2


def test_suggest_and_score(tiny_config_file):
    result = streamrnn("suggest", "the cat", "-n", "3", config=tiny_config_file)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(0 < float(p) < 1 for _, p in rows)
    result = streamrnn("score", "the cat sat", config=tiny_config_file)
    assert result.stdout.startswith("log_prob -") and "perplexity" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["transcribe", "/no/such/file.wav"], "cannot read audio file /no/such/file.wav"),
    (["eval", "/no/such/manifest.jsonl"], "No such file"),
])
def test_errors_are_named_and_exit_non_zero(tiny_config_file, args, message):
    result = streamrnn(*args, config=tiny_config_file)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_corrupt_model_fails_at_start(tmp_path):
    model = tmp_path / "am.pt"
    model.write_bytes(b"broken")
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\nacoustic_model = "{model}"\n')
    result = streamrnn("serve", "--port", "0", "--grpc-port", "0", config=config)
    assert result.returncode == 2
    assert f"acoustic model file {model} is corrupt" in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["stream", "--help"], ["mic", "--help"], ["subscribe", "--help"],
                                  ["key", "new"], ["--config", "config.toml", "soak", "--help"], ["chaos", "--help"],
                                  ["train", "ngram", "--help"]])
def test_commands_that_run_no_model_load_no_torch(args):
    """Help and the client commands answer without importing torch (it takes seconds to load)."""
    script = ("import sys\nfrom streamrnn.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
