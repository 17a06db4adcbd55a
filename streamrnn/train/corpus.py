"""Text corpora for the language model: files to normalised sentences."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from streamrnn.manifest import load_manifest
from streamrnn.tokens import normalize

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


def text_sentences(path: Path) -> list[list[str]]:
    """Sentences of a plain text file, as lists of normalised words."""
    text = Path(path).read_text(errors="replace").replace("<unk>", " ")
    sentences = (normalize(part).split() for part in _SENTENCE_END.split(text))
    return [s for s in sentences if s]


def corpus_sentences(sources: list[str]) -> list[list[str]]:
    """Sentences from text files, folders of them, and the train split of JSONL manifests."""
    sentences = []
    for source in sources:
        path = Path(source)
        if path.suffix == ".jsonl":
            sentences += [u.text.split() for u in load_manifest(path, "train") if u.text]
        elif path.is_dir():
            for file in sorted(path.rglob("*.txt")):
                sentences += text_sentences(file)
        else:
            sentences += text_sentences(path)
    return sentences


def top_words(sentences: list[list[str]], size: int) -> list[str]:
    counts = Counter(word for sentence in sentences for word in sentence)
    return [word for word, _ in counts.most_common(size)]
