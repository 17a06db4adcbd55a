"""Text normalisation and the character alphabet of the acoustic model."""
from __future__ import annotations

import re

BLANK = 0
ALPHABET = " '" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPACE = 1
TOKEN_ID = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
VOCAB_SIZE = len(ALPHABET) + 1


def normalize(text: str) -> str:
    """Upper-case words of letters and apostrophes, single spaces."""
    text = re.sub(r"[^A-Z']+", " ", text.upper())
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


def encode(text: str) -> list[int]:
    return [TOKEN_ID[ch] for ch in normalize(text)]


def decode(ids) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if i != BLANK)
