"""An interpolated modified Kneser-Ney n-gram language model (Chen and Goodman, 1998) over a
fixed vocabulary of word ids, trained on one id stream: the baseline for the LSTM LM.

    P_k(w | h) = max(c_k(h w) - D_k(c_k(h w)), 0) / c_k(h .) + gamma_k(h) P_{k-1}(w | h minus its first word)
    gamma_k(h) = sum over w of D_k(c_k(h w)) / c_k(h .)

c_N are raw counts; the lower orders use continuation counts (how many distinct words precede
the k-gram). A history unseen at order k falls back to order k-1 with weight 1, and order 0 is
uniform over the vocabulary, so every word has a probability and each distribution sums to 1.
D_k(1), D_k(2), D_k(3+) come from the count-of-counts of each order.
"""
from __future__ import annotations

import numpy as np


def discounts(counts: np.ndarray) -> np.ndarray:
    """D(0)=0, D(1), D(2), D(3+) from the count-of-counts n1..n4 (Chen and Goodman's estimates),
    kept inside (0, c) where a tiny corpus makes the estimates degenerate."""
    n = [np.count_nonzero(counts == c) for c in range(1, 5)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] else 0.5
    values = [0.0]
    for c in (1, 2, 3):
        estimate = c - (c + 1) * y * n[c] / n[c - 1] if n[c - 1] else c / 2
        values.append(min(max(estimate, 0.1), c - 0.1))
    return np.array(values)


def find(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of keys in a sorted array, and whether each is there."""
    index = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return index, sorted_keys[index] == keys


class Level:
    """The k-grams of one order: sorted keys, discounted probabilities, back-off weights."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int):
        self.keys, self.words = keys, keys % vocab_size
        self.contexts, self.starts = np.unique(keys // vocab_size, return_index=True)
        self.ends = np.append(self.starts[1:], len(keys))
        totals = np.add.reduceat(counts, self.starts).astype(np.float64)
        self.discount = discounts(counts)
        taken = self.discount[np.minimum(counts, 3)]
        self.probs = (counts - taken) / np.repeat(totals, self.ends - self.starts)
        self.gammas = np.add.reduceat(taken, self.starts) / totals

    def continuations(self, context: int) -> np.ndarray:
        """The words seen after a context (none when the context was never seen)."""
        index, seen = find(self.contexts, np.array([context]))
        return self.words[self.starts[index[0]]:self.ends[index[0]]] if seen[0] else self.words[:0]


class KneserNey:
    def __init__(self, ids, vocab_size: int, order: int = 3, pad: int = 0):
        """`ids`: the training stream; `pad`: the id that histories shorter than order-1 are
        padded with on the left (the sentence boundary, which also starts the stream)."""
        if order < 1 or float(vocab_size) ** order >= 2 ** 63:
            raise ValueError(f"n-gram order must be at least 1 and vocab_size**order fit in 64 bits, got {order}")
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < order or ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"need at least {order} training ids, each in 0..{vocab_size - 1}")
        self.vocab_size, self.order, self.pad = vocab_size, order, pad
        keys, counts = np.unique(self.gram_keys(ids, order), return_counts=True)
        levels = [Level(keys, counts, vocab_size)]
        for k in range(order - 1, 0, -1):
            keys, counts = np.unique(keys % vocab_size ** k, return_counts=True)  # drop the first word
            levels.append(Level(keys, counts, vocab_size))
        self.levels = levels[::-1]  # levels[k - 1] holds order k
        self.top_cache = {}

    def gram_keys(self, ids: np.ndarray, k: int) -> np.ndarray:
        """Each k-gram of the stream (k consecutive ids) as one integer, base vocab_size."""
        keys = np.zeros(len(ids) - k + 1, dtype=np.int64)
        for j in range(k):
            keys = keys * self.vocab_size + ids[j:len(ids) - k + 1 + j]
        return keys

    def histories(self, histories) -> np.ndarray:
        """(n, order-1) id array from rows of any length: the last order-1 ids, left-padded."""
        width = self.order - 1
        rows = [list(h)[len(h) - width:] if width else [] for h in histories]
        return np.array([[self.pad] * (width - len(r)) + r for r in rows], dtype=np.int64).reshape(len(rows), width)

    def probabilities(self, histories: np.ndarray, words: np.ndarray) -> np.ndarray:
        """P(words[i] | histories[i]) for n words and (n, width) histories (see `histories`):
        the model of order width+1, so a narrower history gives a lower-order estimate."""
        words = np.asarray(words, dtype=np.int64)
        width = histories.shape[1]
        probs = np.full(len(words), 1.0 / self.vocab_size)
        context = np.zeros(len(words), dtype=np.int64)
        for k, level in enumerate(self.levels[:width + 1], 1):
            if k > 1:  # one more word of history, to the left of those already in the context
                context = context + histories[:, width - k + 1] * self.vocab_size ** (k - 2)
            at, seen = find(level.contexts, context)
            key_at, key_seen = find(level.keys, context * self.vocab_size + words)
            interpolated = np.where(key_seen, level.probs[key_at], 0.0) + level.gammas[at] * probs
            probs = np.where(seen, interpolated, probs)
        return probs

    def distribution(self, history) -> np.ndarray:
        """P(w | history) for every word id w."""
        words = np.arange(self.vocab_size)
        return self.probabilities(np.repeat(self.histories([history]), len(words), axis=0), words)

    def top(self, history, count: int, excluded=()) -> list[int]:
        """The `count` most likely next word ids, best first, leaving out `excluded` ids."""
        return self.ranked(tuple(self.histories([history])[0]), count, frozenset(excluded))

    def ranked(self, history: tuple, count: int, excluded: frozenset) -> list[int]:
        # A word that order k has never seen after this history gets gamma * P_{k-1}, so the
        # best of order k are among its seen continuations and the best of order k-1.
        order = len(history) + 1
        cached = (history, count, excluded)
        if cached in self.top_cache:
            return self.top_cache[cached]
        if order == 1:
            candidates = np.arange(self.vocab_size)
        else:
            context = 0
            for word in history:
                context = context * self.vocab_size + word
            lower = self.ranked(history[1:], count, excluded)
            candidates = np.union1d(self.levels[order - 1].continuations(context), lower)
        candidates = candidates[~np.isin(candidates, list(excluded))]
        histories = np.tile(np.array(history, dtype=np.int64), (len(candidates), 1))
        probs = self.probabilities(histories, candidates)
        best = [int(w) for w in candidates[np.argsort(-probs, kind="stable")[:count]]]
        self.top_cache[cached] = best
        return best
