"""The acoustic model: log-mel -> global CMVN -> causal frame stacking ->
stacked unidirectional LSTM/GRU -> linear -> CTC log-probs.

`forward` runs whole padded batches (training); `step` runs one chunk and
carries the recurrent state (streaming). Both compute the same thing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from streamrnn.audio import N_MELS
from streamrnn.invariance import MIN_ROWS, is_batch_invariant
from streamrnn.tokens import VOCAB_SIZE


@dataclass
class AcousticConfig:
    rnn: str = "lstm"
    hidden: int = 384
    layers: int = 3
    stack: int = 3
    dropout: float = 0.1
    vocab: int = VOCAB_SIZE
    # What the model emits: "chars" (tokens.ALPHABET) or "phones" (phones.PhoneInventory), and
    # its tokens in id order, blank first. Models from before these fields are character models.
    targets: str = "chars"
    tokens: list[str] | None = None

    def __post_init__(self):
        if self.tokens is not None and len(self.tokens) != self.vocab:
            raise ValueError(f"{len(self.tokens)} tokens but an output layer of {self.vocab}")


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

    def forward(self, features: torch.Tensor, state=None, steps: list[int] | None = None):
        """(B, T, N_MELS) log-mel to ((B, T // stack, vocab) log-probs, state). With `steps`, row b
        is only `steps[b]` steps long (padded after): its returned state is the one at its own end."""
        x = (features - self.mean) / self.std
        x = torch.relu(self.project(self.stack_frames(x)))
        if steps is None:
            x, state = self.rnn(x, state)
        else:
            packed = pack_padded_sequence(x, torch.tensor(steps), batch_first=True, enforce_sorted=False)
            x, state = self.rnn(packed, state)
            x = pad_packed_sequence(x, batch_first=True, total_length=max(steps))[0]
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
        self.state = None  # the model's zero state until the first step: a silent session holds none

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """New log-mel frames to the CTC log-probs (steps, vocab) they complete."""
        return run_streams(self.model, [self], [features])[0]

    def take(self, features: torch.Tensor) -> torch.Tensor:
        """The frames that fill whole steps; the rest waits for the next chunk."""
        frames = torch.cat([self.pending, features])
        usable = len(frames) - len(frames) % self.model.config.stack
        self.pending = frames[usable:]
        return frames[:usable]


@torch.inference_mode()
def run_streams(model: AcousticModel, streams: list[AcousticStream], features: list[torch.Tensor]) -> list:
    """New frames of many streams through the model in one batch (each stream with its own state,
    its own length): the same log-probs each stream would get alone."""
    frames = [stream.take(f) for stream, f in zip(streams, features)]
    results = [torch.zeros(0, model.config.vocab)] * len(streams)
    active = [i for i, f in enumerate(frames) if len(f)]
    if not active:
        return results
    lengths = [len(f) // model.config.stack for f in frames]  # in steps
    rows = batch_rows(model, active, lengths)
    steps = [lengths[i] for i in rows]
    batch = pad_sequence([frames[i] for i in rows], batch_first=True).to(model.mean.device)
    state = join_states([model.initial_state() if streams[i].state is None else streams[i].state for i in rows])
    log_probs, state = model(batch, state, None if len(set(steps)) == 1 else steps)
    log_probs = log_probs.cpu()
    for row, (i, count) in enumerate(zip(active, steps)):
        results[i] = log_probs[row, :count]
        streams[i].state = state_row(state, row, len(rows))
    return results


def batch_rows(model: AcousticModel, active: list[int], lengths: list[int]) -> list[int]:
    """The streams of the batch, in order: `active`, and for a batch-invariant model a repeat of the
    longest one while fewer than MIN_ROWS reach its length, so that every time step of the packed
    sequence runs at least MIN_ROWS rows (see invariance.py)."""
    if not is_batch_invariant(model):
        return active
    longest = max(lengths[i] for i in active)
    reaching = [i for i in active if lengths[i] == longest]
    return active + reaching[:1] * max(0, MIN_ROWS - len(reaching))


def join_states(states: list):
    """Per-stream states (layers, 1, hidden), or (h, c) pairs of them, along the batch axis."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states))
    return torch.cat(states, dim=1)


def state_row(state, row: int, batch: int):
    """One stream's slice of a batched state (a copy, so it does not pin the whole batch)."""
    if batch == 1:
        return state
    if isinstance(state, tuple):
        return tuple(part[:, row:row + 1].clone() for part in state)
    return state[:, row:row + 1].clone()
