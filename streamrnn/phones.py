"""Phone targets for the acoustic model: CMUdict pronunciations (the copy the pocketsphinx wheel
bundles), the phone inventory, and transcripts as phone-id sequences.

The inventory is CTC's blank, an optional word-boundary token and CMUdict's 39 ARPAbet phones
without stress marks. The boundary token plays the part the space plays for characters: it lets
a greedy decode split phones into words, and it is the word separator of a lexicon search
(flashlight-text's LexiconDecoder) just as the space is for a character model.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from streamrnn.tokens import BLANK, normalize

PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
          "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
          "UH", "UW", "V", "W", "Y", "Z", "ZH")
BLANK_TOKEN = "<blank>"
BOUNDARY = "|"

Lexicon = dict[str, list[tuple[str, ...]]]


def cmudict_path() -> Path:
    """cmudict-en-us.dict inside the installed pocketsphinx package."""
    import pocketsphinx
    path = Path(pocketsphinx.__file__).parent / "model" / "en-us" / "cmudict-en-us.dict"
    if not path.is_file():
        raise FileNotFoundError(f"CMUdict not found at {path}: is the pocketsphinx wheel installed?")
    return path


def parse_entry(line: str) -> tuple[str, tuple[str, ...]] | None:
    """'word(2) P R AH0 N' -> ('word', ('P', 'R', 'AH', 'N')): the variant number and stress
    marks dropped; None for a blank or comment line, or one with a phone outside PHONES."""
    parts = line.split("#", 1)[0].split()
    if len(parts) < 2:
        return None
    word = re.sub(r"\(\d+\)$", "", parts[0])
    phones = tuple(p.rstrip("012") for p in parts[1:])
    if not all(p in PHONE_SET for p in phones):
        return None
    return word, phones


PHONE_SET = frozenset(PHONES)
SIBILANTS = frozenset({"S", "Z", "SH", "ZH", "CH", "JH"})
VOICELESS = frozenset({"P", "T", "K", "F", "TH"})


def read_lexicon(lines) -> Lexicon:
    """Normalised word -> its pronunciations, the dictionary's first one first. Entries spelled
    exactly as their normal form come before ones that only normalise to it ('bout after bout);
    entries that normalise to several words (a.m., ad-hoc) are left out."""
    exact: Lexicon = {}
    derived: Lexicon = {}
    for line in lines:
        entry = parse_entry(line)
        if entry is None:
            continue
        word, phones = entry
        normal = normalize(word)
        if not normal or " " in normal:
            continue
        table = exact if normal == word.upper() else derived
        spellings = table.setdefault(normal, [])
        if phones not in spellings:
            spellings.append(phones)
    for word, spellings in derived.items():
        exact.setdefault(word, []).extend(p for p in spellings if p not in exact[word])
    return exact


@lru_cache(maxsize=4)
def load_lexicon(path: str | None = None) -> Lexicon:
    """CMUdict (or another dictionary in its format) as a lexicon; loaded once per path."""
    path = Path(path) if path else cmudict_path()
    with open(path, encoding="utf-8", errors="replace") as lines:
        return read_lexicon(lines)


def possessive(phones: tuple[str, ...]) -> tuple[str, ...]:
    """The English 's ending after a pronunciation: IH Z after a sibilant, S after a voiceless
    consonant, Z otherwise."""
    last = phones[-1]
    return phones + (("IH", "Z") if last in SIBILANTS else ("S",) if last in VOICELESS else ("Z",))


def pronunciations(lexicon: Lexicon, word: str, guess: bool = False) -> list[tuple[str, ...]]:
    """A normalised word's pronunciations: the lexicon's, or for WORD'S not in it, WORD's with
    the possessive ending; else, guessing, the G2P model's; [] when there are none."""
    if word in lexicon:
        return lexicon[word]
    if word.endswith("'S") and word[:-2] in lexicon:
        return [possessive(phones) for phones in lexicon[word[:-2]]]
    from streamrnn.g2p import guess_pronunciation  # the G2P model needs PHONES from here
    guessed = guess_pronunciation(word) if guess else None
    return [guessed] if guessed else []


class PhoneInventory:
    """The tokens a phone-target model emits, and transcripts to and from their ids."""

    kind = "phones"

    def __init__(self, boundary: bool = True, lexicon: Lexicon | None = None, guess: bool = False):
        """guess: words without a pronunciation get the G2P model's instead of failing the transcript."""
        self.boundary, self.guess = boundary, guess
        self.tokens = (BLANK_TOKEN,) + ((BOUNDARY,) if boundary else ()) + PHONES
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self._lexicon = lexicon
        assert self.ids[BLANK_TOKEN] == BLANK

    @classmethod
    def from_tokens(cls, tokens) -> "PhoneInventory":
        inventory = cls(boundary=BOUNDARY in tokens)
        if tuple(tokens) != inventory.tokens:
            raise ValueError(f"not a phone inventory this code knows: {list(tokens)}")
        return inventory

    @property
    def lexicon(self) -> Lexicon:
        if self._lexicon is None:
            self._lexicon = load_lexicon()
        return self._lexicon

    def missing(self, text: str) -> list[str]:
        """The words of a transcript that are not in the lexicon (guessed or not)."""
        return [word for word in normalize(text).split() if not pronunciations(self.lexicon, word)]

    def pronounce(self, word: str) -> tuple[str, ...] | None:
        """A normalised word's first pronunciation: the lexicon's, else (guessing) the G2P model's."""
        spellings = pronunciations(self.lexicon, word, self.guess)
        return spellings[0] if spellings else None

    def phones(self, text: str) -> list[str] | None:
        """A transcript as phone tokens (each word's first pronunciation, boundaries between
        words); None when a word has no pronunciation."""
        tokens: list[str] = []
        for word in normalize(text).split():
            phones = self.pronounce(word)
            if phones is None:
                return None
            if tokens and self.boundary:
                tokens.append(BOUNDARY)
            tokens.extend(phones)
        return tokens

    def encode(self, text: str) -> list[int] | None:
        tokens = self.phones(text)
        return None if tokens is None else [self.ids[t] for t in tokens]

    def decode(self, ids) -> str:
        """Ids to space-separated tokens (blanks dropped)."""
        return " ".join(self.tokens[i] for i in ids if i != BLANK)

    def phone_ids(self, ids) -> list[int]:
        """Only the phones of an id sequence: what the phone error rate counts."""
        boundary = self.ids.get(BOUNDARY)
        return [i for i in ids if i != BLANK and i != boundary]
