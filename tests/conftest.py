"""Fixtures for every layer: tiny models, the shipped models, noise."""
import numpy as np
import pytest
from support import make_acoustic, make_language

from streamrnn.config import Config
from streamrnn.engine.recognizer import Recognizer


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return {"lstm": make_acoustic(tmp, "lstm"), "gru": make_acoustic(tmp, "gru"),
            "lookahead": make_acoustic(tmp, "lstm", lookahead=2), "lm": make_language(tmp)}


@pytest.fixture(scope="session")
def default_recognizer():
    """The shipped default models."""
    return Recognizer(Config())


@pytest.fixture
def noise():
    rng = np.random.default_rng(0)
    return (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
