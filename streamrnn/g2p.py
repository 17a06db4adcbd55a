"""Grapheme to phoneme: a guessed pronunciation for a word CMUdict lacks (names, new words), from a
small LSTM encoder-decoder with attention trained on CMUdict (`streamrnn train g2p`). The shipped
model is assets/g2p.pt; phone-model training, `train lexicon` and the lexicon search's phrases use it.

The encoder is a bidirectional LSTM over the letters; the decoder an LSTM over the phones so far,
attending to the letters (Luong's "general" score). Teacher-forced training runs the decoder over
the whole target at once; decoding is greedy, a batch of words together.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from streamrnn.phones import PHONES

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
PAD, START, END = 0, 1, 2
OUTPUTS = ("<pad>", "<s>", "</s>") + PHONES


@dataclass
class G2PConfig:
    embed: int = 64
    hidden: int = 256  # the decoder's; each encoder direction has half
    encoder_layers: int = 2
    dropout: float = 0.2


def spellable(word: str) -> bool:
    return bool(word) and all(letter in LETTERS for letter in word)


def letter_ids(words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (upper-case) words to padded letter ids and their lengths."""
    lengths = torch.tensor([len(word) for word in words])
    ids = torch.zeros(len(words), int(lengths.max()), dtype=torch.long)
    for row, word in enumerate(words):
        ids[row, :len(word)] = torch.tensor([LETTERS.index(letter) + 1 for letter in word])
    return ids, lengths


class G2PModel(nn.Module):
    def __init__(self, config: G2PConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.letters = nn.Embedding(len(LETTERS) + 1, config.embed, padding_idx=PAD)
        self.encoder = nn.LSTM(config.embed, hidden // 2, config.encoder_layers, batch_first=True,
                               bidirectional=True, dropout=config.dropout if config.encoder_layers > 1 else 0.0)
        self.bridge = nn.Linear(hidden, 2 * hidden)
        self.phones = nn.Embedding(len(OUTPUTS), config.embed, padding_idx=PAD)
        self.decoder = nn.LSTM(config.embed, hidden, batch_first=True)
        self.score = nn.Linear(hidden, hidden, bias=False)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(hidden, len(OUTPUTS))

    def encode(self, letters: torch.Tensor, lengths: torch.Tensor):
        """Letter encodings, their attention keys and padding mask, and the decoder's initial
        state (from the mean encoding)."""
        packed = nn.utils.rnn.pack_padded_sequence(self.letters(letters), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        encoded, _ = self.encoder(packed)
        encoded, _ = nn.utils.rnn.pad_packed_sequence(encoded, batch_first=True, total_length=letters.shape[1])
        mask = letters != PAD
        mean = (encoded * mask[..., None]).sum(1) / lengths[:, None].to(encoded)
        h, c = torch.tanh(self.bridge(mean)).chunk(2, dim=-1)
        memory = (encoded, self.score(encoded).transpose(1, 2), mask)
        return memory, (h[None].contiguous(), c[None].contiguous())

    def decode(self, previous: torch.Tensor, memory, state):
        """Logits of the next phone after each of `previous` (batch x steps), and the new state."""
        encoded, keys, mask = memory
        queries, state = self.decoder(self.dropout(self.phones(previous)), state)
        scores = queries @ keys
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        context = weights @ encoded
        combined = torch.tanh(self.combine(torch.cat([queries, context], -1)))
        return self.output(self.dropout(combined)), state

    def forward(self, letters, lengths, previous):
        """Teacher forcing: previous is <s> then the target phones; returns logits for the target then </s>."""
        memory, state = self.encode(letters, lengths)
        return self.decode(previous, memory, state)[0]

    @torch.no_grad()
    def guess(self, words: list[str]) -> list[tuple[str, ...]]:
        """Greedy pronunciations of normalised words (letters and apostrophes)."""
        letters, lengths = letter_ids(words)
        memory, state = self.encode(letters, lengths)
        previous = torch.full((len(words), 1), START, dtype=torch.long)
        outputs, ended = [], torch.zeros(len(words), dtype=torch.bool)
        for _ in range(2 * letters.shape[1] + 4):
            logits, state = self.decode(previous, memory, state)
            previous = logits[:, -1].argmax(-1, keepdim=True)
            outputs.append(previous[:, 0])
            ended |= previous[:, 0] == END
            if ended.all():
                break
        rows = torch.stack(outputs, 1).tolist()
        return [tuple(OUTPUTS[i] for i in row[:row.index(END) if END in row else len(row)] if i > END) for row in rows]


@lru_cache(maxsize=2)
def load_g2p(path: str = "builtin") -> G2PModel:
    from streamrnn.checkpoint import load_model
    from streamrnn.config import model_path
    return load_model("g2p", model_path(path, "g2p.pt"))


@lru_cache(maxsize=None)
def guess_pronunciation(word: str) -> tuple[str, ...] | None:
    """The shipped G2P model's pronunciation of a normalised word; None for one with other characters."""
    if not spellable(word):
        return None
    return load_g2p().guess([word])[0] or None
