"""Saving and loading model files, with errors that name the file and the problem."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from streamrnn.acoustic import AcousticConfig, AcousticModel
from streamrnn.g2p import G2PConfig, G2PModel
from streamrnn.lm import LanguageModel, LMConfig
from streamrnn_client.protocol import StreamrnnError


class ModelError(StreamrnnError, RuntimeError):
    """A model file that is missing, corrupt or of the wrong kind."""


KINDS = {"acoustic": (AcousticModel, AcousticConfig), "language": (LanguageModel, LMConfig),
         "g2p": (G2PModel, G2PConfig)}


def save_model(model, kind: str, path, meta: dict | None = None, extra: dict | None = None) -> None:
    """Weights as float16 on the CPU, to keep shipped files small and loadable anywhere; they are
    cast back on load. Tied weights (one tensor under two names) are stored once."""
    halves = {}
    state = {k: halves.setdefault(v.data_ptr(), v.cpu().half() if v.is_floating_point() else v.cpu())
             for k, v in model.state_dict().items()}
    payload = {"format": f"streamrnn-{kind}", "version": 1, "config": vars(model.config),
               "state_dict": state, "meta": meta or {}, **(extra or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_payload(kind: str, path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{kind} model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ModelError(f"{kind} model file {path} is corrupt or unreadable: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != f"streamrnn-{kind}":
        raise ModelError(f"{path} is not a streamrnn {kind} model file")
    return payload


def load_model(kind: str, path, device: str = "cpu"):
    payload = read_payload(kind, path)
    model_class, config_class = KINDS[kind]
    try:
        model = model_class(config_class(**payload["config"]), **model_args(payload))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in payload["state_dict"].items()})
    except (TypeError, KeyError, RuntimeError, ValueError) as err:
        raise ModelError(f"{kind} model file {path} does not match the model code: {err}") from err
    model.meta = payload.get("meta", {})
    return model.to(device).eval()


def model_args(payload: dict) -> dict:
    return {"vocabulary": payload["vocabulary"]} if "vocabulary" in payload else {}


def save_training_state(path: Path, model: torch.nn.Module, optimizer, state: dict, args) -> None:
    """Everything a training run needs to resume, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state, "args": vars(args)}
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def load_training_state(path: Path, model: torch.nn.Module, optimizer, device: str) -> dict:
    """Restore model and optimizer from `save_training_state`; return the run's state."""
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["state"]


class SaveClock:
    """When a training run saves its state: every `save_minutes`, and once more when the
    `max_minutes` budget (0: none) is spent, after which the run should stop."""

    def __init__(self, save_minutes: float, max_minutes: float):
        self.save_seconds, self.max_seconds = save_minutes * 60, max_minutes * 60
        self.started = self.last_save = time.time()

    def tick(self, save) -> bool:
        """Call after each step with the run's save function; True means: stop now, saved."""
        now = time.time()
        if self.max_seconds and now - self.started > self.max_seconds:
            save()
            print("time budget reached; resume with --resume")
            return True
        if now - self.last_save > self.save_seconds:
            save()
            self.last_save = now
        return False
