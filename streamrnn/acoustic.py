"""The acoustic model: log-mel -> global CMVN -> frame stacking -> lookahead ->
stacked unidirectional LSTM/GRU -> linear -> CTC log-probs.

With `lookahead` k, each step's input also holds the next k steps' frames: the model stays
unidirectional and streams exactly, its output for a step waiting k steps for its future. At the
end of the audio the missing future is zeros (after CMVN), offline and streaming alike.

`forward` runs whole padded batches (training); `run_streams` runs the next chunk of
many sessions, each carrying its recurrent state (streaming). Both compute the same thing.
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
    lookahead: int = 0  # future steps each step sees: a delay of lookahead x stack x 10 ms

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
        self.project = nn.Linear(N_MELS * config.stack * (1 + config.lookahead), config.hidden)
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

    def look_ahead(self, x: torch.Tensor, steps: list[int] | None) -> torch.Tensor:
        """(B, S, D) normalised steps to (B, S, D * (1 + lookahead)): each step followed by the
        next `lookahead` steps, zeros past a row's end (`steps[b]`, else S)."""
        k = self.config.lookahead
        if not k:
            return x
        if steps is not None:
            inside = torch.arange(x.shape[1], device=x.device)[None, :] < torch.tensor(steps, device=x.device)[:, None]
            x = x * inside[:, :, None]
        padded = torch.nn.functional.pad(x, (0, 0, 0, k))
        return torch.cat([padded[:, j:j + x.shape[1]] for j in range(k + 1)], dim=-1)

    def forward(self, features: torch.Tensor, state=None, steps: list[int] | None = None,
                emit: list[int] | None = None):
        """(B, T, N_MELS) log-mel to ((B, S, vocab) log-probs, state), S = T // stack. With `steps`,
        row b is only `steps[b]` steps long (padded after). With `emit`, only its first `emit[b]`
        steps run (streaming with lookahead: the last ones wait for their future audio). Each row's
        returned state is the one after its last step run."""
        x = self.stack_frames((features - self.mean) / self.std)
        x = torch.relu(self.project(self.look_ahead(x, steps)))
        lengths = emit if emit is not None else steps
        if lengths is not None and len(set(lengths)) == 1:
            x, lengths = x[:, :lengths[0]], None
        if lengths is None:
            x, state = self.rnn(x, state)
        else:
            packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
            x, state = self.rnn(packed, state)
            x = pad_packed_sequence(x, batch_first=True, total_length=max(lengths))[0]
        return torch.log_softmax(self.output(x), dim=-1), state

    def initial_state(self, batch: int = 1):
        shape = (self.config.layers, batch, self.config.hidden)
        zeros = torch.zeros(shape, device=self.mean.device)
        return (zeros, zeros.clone()) if self.config.rnn == "lstm" else zeros


class AcousticStream:
    """One session's acoustic-model stream: frames not yet run (the last step's leftovers, and with
    lookahead the steps still waiting for their future) plus recurrent state."""

    def __init__(self, model: AcousticModel):
        self.model = model
        self.pending = torch.zeros(0, N_MELS)
        self.state = None  # the model's zero state until the first step: a silent session holds none

    def __call__(self, features: torch.Tensor, final: bool = False) -> torch.Tensor:
        """New log-mel frames to the CTC log-probs (steps, vocab) they complete; `final`: the audio
        ends here, so every step left runs."""
        return run_streams(self.model, [self], [features], [final])[0]

    def take(self, features: torch.Tensor, final: bool) -> tuple[torch.Tensor, int]:
        """The frames of the whole steps so far and how many of them run now; the frames from the
        first step not run on wait for the next chunk."""
        stack = self.model.config.stack
        frames = torch.cat([self.pending, features])
        steps = len(frames) // stack
        runnable = steps if final else max(0, steps - self.model.config.lookahead)
        self.pending = frames[runnable * stack:]
        return frames[:steps * stack], runnable


@torch.inference_mode()
def run_streams(model: AcousticModel, streams: list[AcousticStream], features: list[torch.Tensor],
                finals: list[bool] | None = None) -> list:
    """New frames of many streams through the model in one batch (each stream with its own state,
    its own length; `finals`: whose audio ends here): the same log-probs each stream would get alone."""
    taken = [stream.take(f, final) for stream, f, final in zip(streams, features, finals or [False] * len(streams))]
    frames, runnable = [f for f, _ in taken], [n for _, n in taken]
    results = [torch.zeros(0, model.config.vocab)] * len(streams)
    active = [i for i, n in enumerate(runnable) if n]
    if not active:
        return results
    rows = batch_rows(model, active, runnable)
    batch = pad_sequence([frames[i] for i in rows], batch_first=True).to(model.mean.device)
    state = join_states([model.initial_state() if streams[i].state is None else streams[i].state for i in rows])
    steps = [len(frames[i]) // model.config.stack for i in rows]
    log_probs, state = model(batch, state, steps, [runnable[i] for i in rows])
    log_probs = log_probs.cpu()
    for row, i in enumerate(active):
        results[i] = log_probs[row, :runnable[i]]
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
