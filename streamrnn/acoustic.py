"""The acoustic model: log-mel -> global CMVN -> causal frame stacking ->
stacked unidirectional LSTM/GRU -> linear -> CTC log-probs.

`forward` runs whole padded batches (training); `step` runs one chunk and
carries the recurrent state (streaming). Both compute the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .audio import N_MELS
from .tokens import VOCAB_SIZE


@dataclass
class AcousticConfig:
    rnn: str = "lstm"
    hidden: int = 384
    layers: int = 3
    stack: int = 3
    dropout: float = 0.1
    vocab: int = VOCAB_SIZE


class AcousticModel(nn.Module):
    def __init__(self, config: AcousticConfig):
        super().__init__()
        if config.rnn not in ("lstm", "gru"):
            raise ValueError(f"rnn must be 'lstm' or 'gru', got {config.rnn!r}")
        self.config = config
        self.register_buffer("mean", torch.zeros(N_MELS))
        self.register_buffer("std", torch.ones(N_MELS))
        self.project = nn.Linear(N_MELS * config.stack, config.hidden)
        rnn = nn.LSTM if config.rnn == "lstm" else nn.GRU
        self.rnn = rnn(config.hidden, config.hidden, config.layers, batch_first=True,
                       dropout=config.dropout if config.layers > 1 else 0.0)
        self.output = nn.Linear(config.hidden, config.vocab)

    @property
    def frame_shift_s(self) -> float:
        return 0.01 * self.config.stack

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-3))

    def stack_frames(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features to (B, T // stack, F * stack): each step sees the frames it covers."""
        batch, frames, dim = features.shape
        steps = frames // self.config.stack
        stacked = features[:, : steps * self.config.stack]
        return stacked.reshape(batch, steps, dim * self.config.stack)

    def forward(self, features: torch.Tensor, state=None):
        """(B, T, N_MELS) log-mel to ((B, T // stack, vocab) log-probs, state)."""
        x = (features - self.mean) / self.std
        x = torch.relu(self.project(self.stack_frames(x)))
        x, state = self.rnn(x, state)
        return torch.log_softmax(self.output(x), dim=-1), state

    def initial_state(self, batch: int = 1):
        shape = (self.config.layers, batch, self.config.hidden)
        zeros = torch.zeros(shape, device=self.mean.device)
        return (zeros, zeros.clone()) if self.config.rnn == "lstm" else zeros


class AcousticStream:
    """One session's acoustic-model stream: leftover frames plus recurrent state."""

    def __init__(self, model: AcousticModel):
        self.model = model
        self.pending = torch.zeros(0, N_MELS)
        self.state = model.initial_state()

    @torch.inference_mode()
    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """New log-mel frames to the CTC log-probs (steps, vocab) they complete."""
        frames = torch.cat([self.pending, features])
        usable = len(frames) - len(frames) % self.model.config.stack
        self.pending = frames[usable:]
        if usable == 0:
            return torch.zeros(0, self.model.config.vocab)
        log_probs, self.state = self.model(frames[None, :usable].to(self.model.mean.device), self.state)
        return log_probs[0].cpu()

