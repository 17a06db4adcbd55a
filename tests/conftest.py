import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrnn.acoustic import AcousticConfig, AcousticModel
from streamrnn.checkpoint import save_model
from streamrnn.config import Config
from streamrnn.engine.recognizer import Recognizer
from streamrnn.lm import LanguageModel, LMConfig
from streamrnn.tools.soak import ChaosProxy

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEECH = SHARED_DATA / "speech"


def needs_shared_data():
    if not SPEECH.is_dir():
        pytest.skip(f"training data not found at {SHARED_DATA}")


def make_acoustic(tmp: Path, rnn: str = "lstm", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = AcousticModel(AcousticConfig(rnn=rnn, hidden=48, layers=2))
    path = tmp / f"am-{rnn}.pt"
    save_model(model, "acoustic", path)
    return path


def make_language(tmp: Path) -> Path:
    torch.manual_seed(0)
    words = ["THE", "CAT", "SAT", "ON", "A", "MAT", "HELLO", "WORLD"]
    model = LanguageModel(LMConfig(vocab=len(words) + 2, dim=16, layers=1), words)
    path = tmp / "lm.pt"
    save_model(model, "language", path, extra={"vocabulary": model.vocabulary.words})
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return {"lstm": make_acoustic(tmp, "lstm"), "gru": make_acoustic(tmp, "gru"), "lm": make_language(tmp)}


def tiny_config(models, rnn="lstm") -> Config:
    config = Config()
    config.model.acoustic_model = str(models[rnn])
    config.model.language_model = str(models["lm"])
    return config


@pytest.fixture(scope="session")
def default_recognizer():
    """The shipped default models."""
    return Recognizer(Config())


def speech_sample(name="librispeech-mini", index=0):
    needs_shared_data()
    lines = (SPEECH / f"{name}.jsonl").read_text().splitlines()
    record = json.loads(lines[index])
    return SPEECH / record["audio"], record["text"]


@pytest.fixture
def noise():
    rng = np.random.default_rng(0)
    return (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)


@pytest.fixture(scope="session")
def daemon():
    """`streamrnn serve` with the shipped default models."""
    from daemon import Daemon
    server = Daemon()
    yield server
    server.stop()


def tiny_daemon_config(tiny_models, folder: Path, extra: str = "") -> Path:
    """A config.toml for a daemon with the tiny models, plus the `extra` TOML sections."""
    path = folder / "config.toml"
    path.write_text(f'[model]\nacoustic_model = "{tiny_models["lstm"]}"\nlanguage_model = "{tiny_models["lm"]}"\n'
                    + extra)
    return path


@pytest.fixture(scope="session")
def strict_daemon(tiny_models, tmp_path_factory):
    """A daemon with tiny models that demands a config first and takes at most 3 sessions."""
    from daemon import Daemon
    server = Daemon(tiny_daemon_config(tiny_models, tmp_path_factory.mktemp("strict"),
                                       "[server]\nrequire_config = true\nmax_sessions = 3\n"))
    yield server
    server.stop()


class ProxyThread:
    """A ChaosProxy in front of the daemon's HTTP port, run by its own event loop in a thread."""

    def __init__(self, port: int):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.proxy = ChaosProxy("127.0.0.1", port)
        self.http = self.call(self.proxy.start()).replace("ws://", "http://")
        self.address = self.http.removeprefix("http://")  # host:port, for gRPC

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def cut_all(self) -> int:
        async def cut():
            return self.proxy.cut_all()
        return self.call(cut())

    def close(self) -> None:
        self.call(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
