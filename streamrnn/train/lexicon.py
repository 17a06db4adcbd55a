"""`streamrnn train lexicon`: a pronunciation dictionary for a whole vocabulary, so that a phone
model's lexicon search can spell every word of it.

Each word gets CMUdict's pronunciations (the copy pocketsphinx bundles, or --dictionary) and, when
it has none, the G2P model's guess (streamrnn/g2p.py). Writes CMUdict's format, which
`[decoder] pronunciations` in config.toml can name. Words neither gives (characters the G2P model
cannot read) are left out and counted.
"""
from __future__ import annotations

import time
from pathlib import Path

from streamrnn.config import model_path
from streamrnn.g2p import load_g2p, spellable
from streamrnn.phones import load_lexicon, pronunciations
from streamrnn.wordsearch import read_vocabulary


def add_arguments(parser) -> None:
    parser.add_argument("--vocabulary", default="builtin",
                        help="one word a line, as `train ngram` writes (default: the shipped words.txt)")
    parser.add_argument("--dictionary", help="a CMUdict-format dictionary (default: pocketsphinx's CMUdict)")
    parser.add_argument("--g2p", default="builtin", help="the G2P model for words the dictionary lacks")
    parser.add_argument("--out", required=True, metavar="FILE", help="the dictionary to write")


def entries(word: str, spellings: list[tuple[str, ...]]) -> list[str]:
    """CMUdict lines: WORD P R ..., then WORD(2) ... for the other pronunciations."""
    names = [word] + [f"{word}({k})" for k in range(2, len(spellings) + 1)]
    return [f"{name} {' '.join(phones)}" for name, phones in zip(names, spellings)]


def guesses(words: list[str], g2p_path: str, batch: int = 512) -> dict[str, tuple[str, ...]]:
    model, readable = load_g2p(g2p_path), [word for word in words if spellable(word)]
    found = {}
    for start in range(0, len(readable), batch):
        chunk = readable[start:start + batch]
        found.update((word, phones) for word, phones in zip(chunk, model.guess(chunk)) if phones)
    return found


def main(args) -> None:
    started = time.perf_counter()
    lexicon = load_lexicon(args.dictionary)
    vocabulary = read_vocabulary(model_path(args.vocabulary, "words.txt"))
    known = {word: pronunciations(lexicon, word) for word in vocabulary}
    guessed = guesses([word for word, spellings in known.items() if not spellings], args.g2p)
    lines, left_out = [], []
    for word, spellings in known.items():
        spellings = spellings or ([guessed[word]] if word in guessed else [])
        if not spellings:
            left_out.append(word)
        lines += entries(word, spellings)
    Path(args.out).write_text("".join(line + "\n" for line in lines))
    print(f"wrote {args.out}: {len(lines)} pronunciations; {len(guessed)} words guessed by the G2P model, "
          f"{len(left_out)} left out ({' '.join(left_out[:10])}) ({time.perf_counter() - started:.0f} s)")
