"""Interpolated modified Kneser-Ney n-gram language models over word ids (Chen and Goodman, 1998,
as KenLM's lmplz builds them), with count pruning, kept in back-off form and written as ARPA: the
lexicon search's n-gram (`streamrnn train ngram`) and eval-lm's baseline for the LSTM LM.

    P_k(w | h) = max(a_k(h w) - D_k(a_k(h w)), 0) / a_k(h .) + gamma_k(h) P_{k-1}(w | h minus its first word)
    gamma_k(h) = sum over w of D_k(a_k(h w)) / a_k(h .)

a_N are raw counts; the lower orders use adjusted counts: how many distinct words precede the
k-gram (its raw count if it starts with the sentence start, which nothing precedes). Order 1 is
interpolated with the uniform distribution over every word that can come next (all but the
sentence start), so every word has a probability and each distribution sums to 1. A history
never seen at order k falls back to order k-1 with weight 1. D_k(1), D_k(2), D_k(3+) come from
the count-of-counts of each order.

In back-off form (ARPA's), P(w | h) = p(h w) where the n-gram h w is kept, else
bow(h) P(w | h minus its first word), with bow(h) = 1 where h is not kept. Unpruned, p = P_k and
bow = gamma_k. Pruning drops the n-grams (orders 2 and up) seen fewer than a minimum number of
times; the kept ones keep their P_k, and bow(h) takes exactly the mass that was theirs:

    bow(h) = gamma(h) + (sum of P_k's first term over the dropped h w) / (1 - sum of P_{k-1}(w | h') over the kept h w)

A model is trained on sentences (`bos` and `eos` given: each one `<s> w1 .. wn </s>`, and no
n-gram crosses from one into the next: what `train ngram` writes) or on one stream of ids (every
window is an n-gram; eval-lm's, whose histories are left-padded with `pad`).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

LOG10_OF_ZERO = -99.0  # ARPA's probability of <s>, which is never predicted


@dataclass
class Level:
    """The n-grams of one order k, sorted by key: (index of the (k-1)-gram prefix at order k-1) *
    vocab_size + last word; at order 1 every id has an entry and its key is the id."""
    keys: np.ndarray
    probs: np.ndarray
    bows: np.ndarray | None = None  # each n-gram's back-off weight as a history (1 where it is none); None at the top


@dataclass
class Counts:
    """Every n-gram of one order in the training ids: key (as in Level), raw count, the index of
    its suffix (itself less its first word) at the order below, and its first word."""
    keys: np.ndarray
    raw: np.ndarray
    suffix: np.ndarray
    first: np.ndarray
    adjusted: np.ndarray | None = None


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


def group_starts(keys: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct histories (prefix indices) of sorted n-gram keys, and where each one's n-grams start."""
    prefixes = keys // vocab_size
    starts = np.flatnonzero(np.r_[True, prefixes[1:] != prefixes[:-1]])
    return prefixes[starts], starts


def count_ngrams(ids: np.ndarray, vocab_size: int, order: int, bos: int | None, eos: int | None) -> list[Counts]:
    """The n-grams of orders 1..order, each order's keys built on the indices of the order below."""
    counts = [Counts(np.arange(vocab_size), np.bincount(ids, minlength=vocab_size), np.zeros(0, np.int64),
                     np.arange(vocab_size))]
    at = ids  # the index of the k-gram that starts at each position (-1: none does)
    for k in range(2, order + 1):
        n = len(ids) - k + 1
        valid = (at[:n] >= 0) & (at[1:n + 1] >= 0)
        if k == 2 and eos is not None:
            valid &= (ids[:n] != eos) & (ids[1:] != bos)
        starts = np.flatnonzero(valid)
        keys, inverse, raw = np.unique(at[starts] * vocab_size + ids[starts + k - 1],
                                       return_inverse=True, return_counts=True)
        one = np.empty(len(keys), dtype=np.int64)
        one[inverse] = starts  # one place where each n-gram occurs
        counts.append(Counts(keys, raw, at[one + 1], ids[one]))
        at = np.full(n, -1, dtype=np.int64)
        at[starts] = inverse
    return counts


def adjust(counts: list[Counts], bos: int | None) -> None:
    """Adjusted counts: raw at the top order; below, how many distinct n-grams of the order above
    end with the n-gram (raw where it starts with bos); bos itself never comes next."""
    for level, above in pairwise(counts):
        level.adjusted = np.bincount(above.suffix, minlength=len(level.keys))
    counts[-1].adjusted = counts[-1].raw.copy()
    if bos is not None:
        for level in counts[1:-1]:
            level.adjusted = np.where(level.first == bos, level.raw, level.adjusted)
        counts[0].adjusted[bos] = 0


def unigram_probs(adjusted: np.ndarray, bos: int | None) -> np.ndarray:
    discount = discounts(adjusted)
    taken = discount[np.minimum(adjusted, 3)]
    total = adjusted.sum()
    probs = (adjusted - taken) / total + taken.sum() / total / (len(adjusted) - (bos is not None))
    if bos is not None:
        probs[bos] = 0.0
    return probs


def estimate(level: Counts, lower_probs: np.ndarray, vocab_size: int, min_count: int) -> tuple[np.ndarray, ...]:
    """One order's P_k for each n-gram; its histories (prefix indices) and their back-off weights
    once the n-grams seen fewer than min_count times are dropped."""
    histories, starts = group_starts(level.keys, vocab_size)
    adjusted = level.adjusted
    totals = np.add.reduceat(adjusted, starts).astype(np.float64)
    sizes = np.diff(np.append(starts, len(adjusted)))
    taken = discounts(adjusted)[np.minimum(adjusted, 3)]
    gammas = np.where(totals > 0, np.add.reduceat(taken, starts) / np.maximum(totals, 1), 1.0)
    firsts = (adjusted - taken) / np.repeat(np.maximum(totals, 1), sizes)
    lower = lower_probs[level.suffix]
    kept = level.raw >= min_count
    dropped_mass = np.add.reduceat(np.where(kept, 0.0, firsts), starts)
    kept_lower = np.add.reduceat(np.where(kept, lower, 0.0), starts)
    bows = gammas + dropped_mass / np.maximum(1.0 - kept_lower, 1e-12)
    return firsts + np.repeat(gammas, sizes) * lower, histories, bows


def kneser_ney(ids, vocab_size: int, order: int, bos: int | None = None, eos: int | None = None,
               min_counts: list[int] | None = None) -> list[Level]:
    """The model's levels (orders 1..order), pruned to the n-grams seen at least min_counts[k-1]
    times at order k (the first, for unigrams, must be 1: every id stays)."""
    min_counts = list(min_counts or [1] * order)
    check_min_counts(order, min_counts)
    counts = count_ngrams(np.asarray(ids, dtype=np.int64), vocab_size, order, bos, eos)
    adjust(counts, bos)
    levels = [Level(np.arange(vocab_size), unigram_probs(counts[0].adjusted, bos))]
    for level, min_count in zip(counts[1:], min_counts[1:]):
        probs, histories, bows = estimate(level, levels[-1].probs, vocab_size, min_count)
        levels[-1].bows = np.ones(len(levels[-1].keys))
        levels[-1].bows[histories] = bows
        levels.append(Level(level.keys, probs))
    return prune(levels, [c.raw for c in counts], min_counts, vocab_size)


def check_min_counts(order: int, min_counts: list[int]) -> None:
    if len(min_counts) != order or min_counts[0] != 1 or min_counts != sorted(min_counts):
        raise ValueError(f"need {order} minimum counts (one per order), the first 1 (unigrams stay) and none "
                         f"smaller than the one before, got {' '.join(map(str, min_counts))}")


def prune(levels: list[Level], raw: list[np.ndarray], min_counts: list[int], vocab_size: int) -> list[Level]:
    """Only the n-grams seen at least min_counts times, their keys renumbered for the prefixes
    that stay (a kept n-gram's prefix and suffix were seen at least as often, so they stay)."""
    if all(c == 1 for c in min_counts):
        return levels
    pruned, renumber = [levels[0]], np.arange(vocab_size)
    for level, counts, min_count in zip(levels[1:], raw[1:], min_counts[1:]):
        kept = counts >= min_count
        keys = level.keys[kept]
        keys = renumber[keys // vocab_size] * vocab_size + keys % vocab_size
        pruned.append(Level(keys, level.probs[kept], None if level.bows is None else level.bows[kept]))
        renumber = np.cumsum(kept) - 1
    return pruned


class NgramModel:
    """An n-gram model in back-off form: probabilities of next words, the likeliest next words, ARPA."""

    def __init__(self, levels: list[Level], vocab_size: int, pad: int = 0):
        self.levels, self.vocab_size, self.order, self.pad = levels, vocab_size, len(levels), pad
        self.top_cache = {}

    def histories(self, histories) -> np.ndarray:
        """(n, order-1) id array from rows of any length: the last order-1 ids, left-padded."""
        width = self.order - 1
        rows = [list(h)[len(h) - width:] if width else [] for h in histories]
        return np.array([[self.pad] * (width - len(r)) + r for r in rows], dtype=np.int64).reshape(len(rows), width)

    def index_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each (n, m) row's index among the kept m-grams, and whether it is one."""
        index, found = rows[:, 0].copy(), np.ones(len(rows), dtype=bool)
        for j in range(1, rows.shape[1]):
            index, seen = find(self.levels[j].keys, index * self.vocab_size + rows[:, j])
            found &= seen
        return index, found

    def probabilities(self, histories: np.ndarray, words) -> np.ndarray:
        """P(words[i] | histories[i]) for n words and (n, width) histories (see `histories`):
        the model of order width+1, so a narrower history gives a lower-order estimate."""
        words = np.asarray(words, dtype=np.int64)
        width = histories.shape[1]
        probs = self.levels[0].probs[words]
        for k in range(2, width + 2):
            history, known = self.index_of(histories[:, width - k + 1:])
            at, seen = find(self.levels[k - 1].keys, history * self.vocab_size + words)
            bows = np.where(known, self.levels[k - 2].bows[history], 1.0)
            probs = np.where(seen & known, self.levels[k - 1].probs[at], bows * probs)
        return probs

    def distribution(self, history) -> np.ndarray:
        """P(w | history) for every word id w."""
        words = np.arange(self.vocab_size)
        return self.probabilities(np.repeat(self.histories([history]), len(words), axis=0), words)

    def continuations(self, history: tuple) -> np.ndarray:
        """The words kept after a history (none when the history is not kept)."""
        index, found = self.index_of(np.array([history], dtype=np.int64))
        if not found[0]:
            return np.zeros(0, dtype=np.int64)
        keys = self.levels[len(history)].keys
        first, last = np.searchsorted(keys, [index[0] * self.vocab_size, (index[0] + 1) * self.vocab_size])
        return keys[first:last] % self.vocab_size

    def top(self, history, count: int, excluded=()) -> list[int]:
        """The `count` most likely next word ids, best first, leaving out `excluded` ids."""
        return self.ranked(tuple(self.histories([history])[0]), count, frozenset(excluded))

    def ranked(self, history: tuple, count: int, excluded: frozenset) -> list[int]:
        # A word that order k does not hold after this history gets bow * P_{k-1}, so the best of
        # order k are among its kept continuations and the best of order k-1.
        cached = (history, count, excluded)
        if cached in self.top_cache:
            return self.top_cache[cached]
        if not history:
            candidates = np.arange(self.vocab_size)
        else:
            candidates = np.union1d(self.continuations(history), self.ranked(history[1:], count, excluded))
        candidates = candidates[~np.isin(candidates, list(excluded))]
        histories = np.tile(np.array(history, dtype=np.int64), (len(candidates), 1))
        probs = self.probabilities(histories, candidates)
        best = [int(w) for w in candidates[np.argsort(-probs, kind="stable")[:count]]]
        self.top_cache[cached] = best
        return best

    def ngram_words(self, k: int) -> list[np.ndarray]:
        """The word ids of every kept k-gram, as k columns."""
        keys = self.levels[k - 1].keys
        columns = [keys % self.vocab_size]
        for level in reversed(self.levels[:k - 1]):
            keys = level.keys[keys // self.vocab_size]
            columns.insert(0, keys % self.vocab_size)
        return columns

    def write_arpa(self, path, words: list[str], bos: int | None = None, gzipped: bool = False) -> None:
        """The model as an ARPA file (gzip-compressed if asked); words[i] spells id i."""
        spellings = np.array(words, dtype=object)
        with (gzip.open(path, "wt", compresslevel=6) if gzipped else open(path, "w")) as out:
            out.write("\\data\\\n" + "".join(f"ngram {k}={len(level.keys)}\n" for k, level in enumerate(self.levels, 1)))
            for k, level in enumerate(self.levels, 1):
                out.write(f"\n\\{k}-grams:\n")
                for lines in self.arpa_lines(k, spellings, bos):
                    out.write(lines)
            out.write("\n\\end\\\n")

    def arpa_lines(self, k: int, spellings: np.ndarray, bos: int | None, batch: int = 1_000_000):
        level = self.levels[k - 1]
        with np.errstate(divide="ignore"):
            log_probs = np.maximum(np.log10(level.probs), LOG10_OF_ZERO)
        if k == 1 and bos is not None:
            log_probs[bos] = LOG10_OF_ZERO
        log_bows = None if level.bows is None else np.log10(level.bows)
        columns = self.ngram_words(k)
        for start in range(0, len(level.keys), batch):
            part = slice(start, start + batch)
            texts = [" ".join(row) for row in zip(*(spellings[c[part]] for c in columns))]
            if log_bows is None:
                yield "".join(f"{p:.6g}\t{t}\n" for p, t in zip(log_probs[part], texts))
            else:
                yield "".join(f"{p:.6g}\t{t}\t{b:.6g}\n" for p, t, b in zip(log_probs[part], texts, log_bows[part]))


class KneserNey(NgramModel):
    """Trained on one stream of ids (every window an n-gram), unpruned: eval-lm's baseline."""

    def __init__(self, ids, vocab_size: int, order: int = 3, pad: int = 0):
        """`ids`: the training stream; `pad`: the id that histories shorter than order-1 are
        padded with on the left (the sentence boundary, which also starts the stream)."""
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < order or ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"need at least {order} training ids, each in 0..{vocab_size - 1}")
        super().__init__(kneser_ney(ids, vocab_size, order), vocab_size, pad)
