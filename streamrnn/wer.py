"""Word and character error rates."""
from __future__ import annotations


def edit_distance(ref, hyp) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def matched(ref: list[str], hyp: list[str]) -> list[bool]:
    """For each hypothesis word, whether a minimal word alignment pairs it with an equal reference word."""
    rows = [list(range(len(hyp) + 1))]
    for i, r in enumerate(ref, 1):
        rows.append([i] + [0] * len(hyp))
        for j, h in enumerate(hyp, 1):
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + (r != h))
    flags, i, j = [False] * len(hyp), len(ref), len(hyp)
    while i and j:
        if rows[i][j] == rows[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            flags[j - 1] = ref[i - 1] == hyp[j - 1]
            i, j = i - 1, j - 1
        elif rows[i][j] == rows[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return flags


class ErrorRate:
    """Accumulates word and character errors over many (reference, hypothesis) pairs."""

    def __init__(self):
        self.word_errors = self.words = self.char_errors = self.chars = 0

    def add(self, reference: str, hypothesis: str) -> None:
        self.word_errors += edit_distance(reference.split(), hypothesis.split())
        self.words += len(reference.split())
        self.char_errors += edit_distance(reference, hypothesis)
        self.chars += len(reference)

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)
