"""Text normalisation and the character alphabet of the acoustic model."""
from __future__ import annotations

import re
import unicodedata

BLANK = 0
ALPHABET = " '" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPACE = 1
TOKEN_ID = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
VOCAB_SIZE = len(ALPHABET) + 1


# Typographic apostrophes (books write "didn’t"): read as the ASCII one, not as word breaks.
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def normalize(text: str) -> str:
    """Upper-case words of letters and apostrophes, single spaces; accents dropped (É -> E)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text.translate(APOSTROPHES))
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^A-Z']+", " ", text.upper())
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


def encode(text: str) -> list[int]:
    return [TOKEN_ID[ch] for ch in normalize(text)]


def decode(ids) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if i != BLANK)
