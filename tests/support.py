"""Helpers the tests share: the shared data, tiny models made on the spot, configs for them."""
import json
import os
from pathlib import Path

import pytest
import torch

from streamrnn.acoustic import AcousticConfig, AcousticModel
from streamrnn.checkpoint import save_model
from streamrnn.config import Config
from streamrnn.lm import LanguageModel, LMConfig
from streamrnn.tools.cluster_process import require

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEECH = SHARED_DATA / "speech"


def missing(reason: str):
    """A test needs something this machine lacks: skip, with the reason; in CI, where .ci/run
    installs everything and lays ../shared/data beside the clone, fail, so nothing skips unnoticed."""
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def needs_program(program: str) -> str:
    """A Debian program's path (streamrnn.tools.cluster_process.require), or `missing` naming its package."""
    try:
        return require(program)
    except RuntimeError as err:
        missing(str(err))


def needs_shared_data():
    if not SPEECH.is_dir():
        missing(f"training data not found at {SHARED_DATA}")


def make_acoustic(tmp: Path, rnn: str = "lstm", seed: int = 0, lookahead: int = 0) -> Path:
    torch.manual_seed(seed)
    model = AcousticModel(AcousticConfig(rnn=rnn, hidden=48, layers=2, lookahead=lookahead))
    path = tmp / f"am-{rnn}-{lookahead}.pt"
    save_model(model, "acoustic", path)
    return path


def make_language(tmp: Path) -> Path:
    torch.manual_seed(0)
    words = ["THE", "CAT", "SAT", "ON", "A", "MAT", "HELLO", "WORLD"]
    model = LanguageModel(LMConfig(vocab=len(words) + 2, dim=16, layers=1), words)
    path = tmp / "lm.pt"
    save_model(model, "language", path, extra={"vocabulary": model.vocabulary.words})
    return path


def tiny_config(models, rnn="lstm") -> Config:
    config = Config()
    config.model.acoustic_model = str(models[rnn])
    config.model.language_model = str(models["lm"])
    return config


def speech_sample(name="librispeech-mini", index=0):
    needs_shared_data()
    lines = (SPEECH / f"{name}.jsonl").read_text().splitlines()
    record = json.loads(lines[index])
    return SPEECH / record["audio"], record["text"]


def tiny_daemon_config(tiny_models, folder: Path, extra: str = "") -> Path:
    """A config.toml for a daemon with the tiny models, plus the `extra` TOML sections."""
    path = folder / "config.toml"
    path.write_text(f'[model]\nacoustic_model = "{tiny_models["lstm"]}"\nlanguage_model = "{tiny_models["lm"]}"\n'
                    + extra)
    return path
