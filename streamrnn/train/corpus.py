"""Text corpora for the language model: files to normalised sentences."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from streamrnn.manifest import load_manifest
from streamrnn.tokens import normalize

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


def text_sentences(path: Path) -> list[list[str]]:
    """Sentences of a plain text file, as lists of normalised words."""
    text = Path(path).read_text(errors="replace").replace("<unk>", " ")
    sentences = (normalize(part).split() for part in _SENTENCE_END.split(text))
    return [s for s in sentences if s]


def corpus_documents(sources: list[str]) -> Iterator[tuple[str, list[list[str]]]]:
    """(name, sentences) of each document of the sources, one at a time: a text file, given or in a
    folder (its .txt files, recursively), or one transcript of a JSONL manifest's train split."""
    for source in sources:
        path = Path(source)
        if path.suffix == ".jsonl":
            for utterance in load_manifest(path, "train"):
                if utterance.text:
                    yield str(utterance.audio), [utterance.text.split()]
        elif path.is_dir():
            for file in sorted(path.rglob("*.txt")):
                yield str(file), text_sentences(file)
        else:
            yield str(path), text_sentences(path)


def corpus_sentences(sources: list[str]) -> list[list[str]]:
    """Sentences from text files, folders of them, and the train split of JSONL manifests."""
    return [sentence for _, sentences in corpus_documents(sources) for sentence in sentences]


def top_words(sentences: list[list[str]], size: int) -> list[str]:
    counts = Counter(word for sentence in sentences for word in sentence)
    return [word for word, _ in counts.most_common(size)]
