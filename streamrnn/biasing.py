"""Phrase biasing: a character trie of boosted phrases walked as hypotheses grow.

Each character that extends a match earns a bonus; a match that breaks off
loses what it had earned, so only whole phrases keep their boost.
"""
from __future__ import annotations

from streamrnn.tokens import normalize


class PhraseTrie:
    def __init__(self, phrases: list[str], bonus: float):
        self.bonus = bonus
        self.children: list[dict[str, int]] = [{}]
        self.complete: list[bool] = [False]
        self.words: set[str] = set()
        self.prefixes: set[str] = set()
        for phrase in phrases:
            self.add(normalize(phrase))

    def add(self, phrase: str) -> None:
        if not phrase:
            return
        self.words.update(phrase.split())
        self.prefixes.update(w[:end] for w in phrase.split() for end in range(1, len(w) + 1))
        node = 0
        for ch in phrase:
            if ch not in self.children[node]:
                self.children.append({})
                self.complete.append(False)
                self.children[node][ch] = len(self.children) - 1
            node = self.children[node][ch]
        self.complete[node] = True

    def __bool__(self) -> bool:
        return len(self.children) > 1

    def advance(self, node: int, pending: float, ch: str, at_word_start: bool) -> tuple[int, float, float]:
        """One more character: (next node, pending bonus, bonus earned for good)."""
        child = self.children[node].get(ch)
        if child is None:
            child = self.children[0].get(ch) if at_word_start else None
            if child is None:
                return 0, 0.0, 0.0
            pending = 0.0
        pending += self.bonus
        if self.complete[child] and not self.children[child]:
            return 0, 0.0, pending
        if self.complete[child]:
            return child, 0.0, pending
        return child, pending, 0.0
