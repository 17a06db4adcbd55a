"""`streamrnn train lexicon`: a pronunciation dictionary for a whole vocabulary, so that a phone
model's lexicon search can spell every word of it.

Each word gets CMUdict's pronunciations (the copy pocketsphinx bundles, or --dictionary) and, when
it has none, flite's letter-to-sound guess (`t2p`, from Debian's flite package). Writes CMUdict's
format, which `[decoder] pronunciations` in config.toml can name. Words neither gives are left out
(the search cannot spell them) and counted.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from streamrnn.config import model_path
from streamrnn.phones import flite_pronunciation, load_lexicon, pronunciations
from streamrnn.wordsearch import read_vocabulary


def add_arguments(parser) -> None:
    parser.add_argument("--vocabulary", default="builtin",
                        help="one word a line, as `train ngram` writes (default: the shipped words.txt)")
    parser.add_argument("--dictionary", help="a CMUdict-format dictionary (default: pocketsphinx's CMUdict)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the dictionary to write")


def entries(word: str, spellings: list[tuple[str, ...]]) -> list[str]:
    """CMUdict lines: WORD P R ..., then WORD(2) ... for the other pronunciations."""
    names = [word] + [f"{word}({k})" for k in range(2, len(spellings) + 1)]
    return [f"{name} {' '.join(phones)}" for name, phones in zip(names, spellings)]


def main(args) -> None:
    if shutil.which("t2p") is None:
        raise ValueError("flite's t2p is not installed (Debian: apt-get install flite): "
                         "it guesses the words the dictionary lacks")
    started = time.perf_counter()
    lexicon = load_lexicon(args.dictionary)
    lines, guessed, left_out = [], 0, []
    for word in read_vocabulary(model_path(args.vocabulary, "words.txt")):
        spellings = pronunciations(lexicon, word)
        if not spellings and (guess := flite_pronunciation(word)):
            spellings, guessed = [guess], guessed + 1
        if not spellings:
            left_out.append(word)
        lines += entries(word, spellings)
    Path(args.out).write_text("".join(line + "\n" for line in lines))
    print(f"wrote {args.out}: {len(lines)} pronunciations; {guessed} words guessed by flite, "
          f"{len(left_out)} left out ({' '.join(left_out[:10])}) ({time.perf_counter() - started:.0f} s)")
