"""The word-level LSTM language model (tied embeddings) and its vocabulary."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from streamrnn.invariance import MIN_ROWS, is_batch_invariant, padded_rows

BOUNDARY = "</s>"  # sentence boundary: what the model reads first and predicts last
UNKNOWN = "<unk>"


@dataclass
class LMConfig:
    vocab: int = 10000
    dim: int = 256
    layers: int = 2
    dropout: float = 0.3


class Vocabulary:
    def __init__(self, words: list[str]):
        self.words = [BOUNDARY, UNKNOWN] + [w for w in words if w not in (BOUNDARY, UNKNOWN)]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.prefixes = word_prefixes(self.words[2:])
        self.boundary, self.unknown = 0, 1

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        return self.index.get(word, self.unknown)

    def ids(self, words) -> list[int]:
        return [self.id(w) for w in words]


def word_prefixes(words) -> frozenset[str]:
    """Every non-empty prefix of every word: what a speller may still be on its way to."""
    return frozenset(word[:end] for word in words for end in range(1, len(word) + 1))


class LanguageModel(nn.Module):
    def __init__(self, config: LMConfig, vocabulary: list[str] | None = None):
        super().__init__()
        self.config = config
        self.vocabulary = Vocabulary(vocabulary or [])
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.rnn = nn.LSTM(config.dim, config.dim, config.layers, batch_first=True,
                           dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.dim, config.vocab)
        self.decoder.weight = self.embed.weight

    def forward(self, ids: torch.Tensor, state=None):
        """(B, T) word ids to ((B, T, vocab) logits, state)."""
        x, state = self.rnn(self.drop(self.embed(ids)), state)
        return self.decoder(self.drop(x)), state


class LMRunner:
    """Inference with a language model: carried state, next-word distributions, scores."""

    def __init__(self, model: LanguageModel):
        self.model = model
        self.vocabulary = model.vocabulary
        self.device = next(model.parameters()).device
        self.pad_rows = is_batch_invariant(model)  # every batch at least MIN_ROWS rows (see invariance.py)
        # The output layer as (dim, vocab): a small batch times it runs about a third faster than
        # through nn.Linear's (vocab, dim) weight on the CPU. A quantized layer keeps its own kernel.
        plain = type(model.decoder) is nn.Linear
        self.output_weight = model.decoder.weight.detach().t().contiguous() if plain else None

    @torch.inference_mode()
    def advance(self, state, words: list[str]):
        """Read `words` from `state`; return the new state and the next word's log-probs (a numpy array)."""
        ids = torch.tensor([self.vocabulary.ids(words)], device=self.device)
        hidden, state = self.run_rnn(ids, state)
        return state, self.log_probs(hidden[:, -1])[0]

    @torch.inference_mode()
    def advance_many(self, states: list, words: list[str]) -> list:
        """One word after each of many states, in one batched pass: [(state, log-probs)]."""
        ids = torch.tensor([[self.vocabulary.id(w)] for w in words], device=self.device)
        joined = tuple(torch.cat([state[k] for state in states], dim=1) for k in (0, 1))
        hidden, (h, c) = self.run_rnn(ids, joined)
        log_probs = self.log_probs(hidden[:, -1])
        return [((h[:, i:i + 1].clone(), c[:, i:i + 1].clone()), log_probs[i].copy()) for i in range(len(words))]

    @torch.inference_mode()
    def state_log_probs(self, state) -> np.ndarray:
        """The next-word log-probs after `state` (its last layer's output is the LSTM's output)."""
        return self.log_probs(state[0][-1])[0]

    def log_probs(self, hidden: torch.Tensor) -> np.ndarray:
        """(B, dim) LSTM outputs to (B, vocab) next-word log-probs. Numpy: the decoder reads single
        entries of them thousands of times a second, and a numpy element is 20 times faster to read."""
        count = len(hidden)
        if self.pad_rows:
            hidden = padded_rows(hidden)
        if self.output_weight is None:
            logits = self.model.decoder(hidden)
        else:
            logits = torch.addmm(self.model.decoder.bias, hidden, self.output_weight)
        return torch.log_softmax(logits[:count].float(), dim=-1).cpu().numpy()

    def run_rnn(self, ids: torch.Tensor, state):
        """The LSTM over (B, T) word ids from `state` ((h, c), or None for zeros)."""
        count = len(ids)
        if self.pad_rows and count < MIN_ROWS:
            ids = padded_rows(ids)
            state = None if state is None else tuple(padded_rows(part, dim=1) for part in state)
        hidden, (h, c) = self.model.rnn(self.model.embed(ids), state)
        if count < len(ids):  # padded: copies, so a session's state does not hold the padding
            hidden, h, c = hidden[:count], h[:, :count].contiguous(), c[:, :count].contiguous()
        return hidden, (h, c)

    def start(self):
        """State and log-probs at the start of a text (after a sentence boundary)."""
        return self.advance(None, [BOUNDARY])

    def suggest(self, log_probs: np.ndarray, count: int) -> list[tuple[str, float]]:
        """The most likely next words, boundary and unknown left out."""
        top = torch.topk(torch.from_numpy(log_probs), min(count + 2, len(log_probs)))
        pairs = [(self.vocabulary.words[i], float(p.exp())) for p, i in zip(top.values, top.indices.tolist())]
        return [(w, p) for w, p in pairs if w not in (BOUNDARY, UNKNOWN)][:count]

    @torch.inference_mode()
    def score(self, words: list[str]) -> tuple[float, float]:
        """Natural-log probability of a sentence (with its end boundary) and its perplexity."""
        ids = self.vocabulary.ids([BOUNDARY] + list(words) + [BOUNDARY])
        logits, _ = self.model(torch.tensor([ids[:-1]], device=self.device))
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)
        total = float(log_probs.gather(1, torch.tensor(ids[1:], device=self.device)[:, None]).sum())
        return total, math.exp(-total / (len(ids) - 1))


class WordScorer:
    """log P(word | words so far), cached by history, from a root entry: (state, log-probs), or
    (state, None) for a root whose log-probs are made from its state when first needed. Between
    utterances a session then holds the LM's state (4 KB), not its next-word distribution (40 KB)."""

    def __init__(self, runner: LMRunner, root):
        self.runner = runner
        self.cache = {(): root}

    def entry(self, history: tuple):
        if history not in self.cache:
            state, _ = self.entry(history[:-1])
            self.cache[history] = self.runner.advance(state, [history[-1]])
        elif self.cache[history][1] is None:
            state = self.cache[history][0]
            self.cache[history] = (state, self.runner.state_log_probs(state))
        return self.cache[history]

    def root_log_probs(self) -> np.ndarray:
        """The next-word distribution at the root (not kept if it was not there)."""
        state, log_probs = self.cache[()]
        return self.runner.state_log_probs(state) if log_probs is None else log_probs

    def log_prob(self, history: tuple, word: str) -> float:
        return float(self.entry(history)[1][self.runner.vocabulary.id(word)])


def prefetch(runner: LMRunner, requests: list[tuple[WordScorer, tuple]]) -> None:
    """Compute the entries for (scorer, history) pairs of many sessions in one batched LM pass."""
    requests = [(scorer, history) for scorer, history in requests if history[:-1] in scorer.cache]
    if not requests:
        return
    steps = [(scorer.cache[history[:-1]][0], history[-1]) for scorer, history in requests]
    results = runner.advance_many([state for state, _ in steps], [word for _, word in steps])
    for (scorer, history), entry in zip(requests, results):
        scorer.cache[history] = entry
