"""`streamrnn train ngram`: the lexicon search's vocabulary and word n-gram, from your own text.

Reads text files, folders of .txt files (recursively) and JSONL manifests (the transcripts of their
train split only), split into sentences and normalised as the recognizer spells words. With
--blocklist, drops what evaluation transcripts contain (see `Blocklist.blocked`). The vocabulary
is the --vocab-size most frequent words; the others become <unk>. Trains an interpolated modified
Kneser-Ney n-gram on the sentences (streamrnn.tools.ngram), pruned by --min-counts, and writes
DIR/words.txt (one word a line, most frequent first) and DIR/words.arpa (or .arpa.gz), which
`[decoder] vocabulary` and `ngram` in config.toml can name.
"""
from __future__ import annotations

import hashlib
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamrnn.manifest import load_manifest
from streamrnn.tools.ngram import NgramModel, check_min_counts, kneser_ney
from streamrnn.train.corpus import corpus_documents

WINDOW = 8  # words per hashed window of the blocklist
MAX_DOCUMENT_MATCHES = 5  # a document with more blocked windows than this is dropped whole
SPECIAL = ["<s>", "</s>", "<unk>"]
BOS, EOS, UNK = 0, 1, 2


def add_arguments(parser) -> None:
    parser.add_argument("--text", nargs="+", required=True, metavar="PATH",
                        help="text files, folders of .txt files (recursively), JSONL manifests (their train split)")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/words.txt and DIR/words.arpa[.gz]")
    parser.add_argument("--vocab-size", type=int, default=100_000, help="the most frequent words kept (default 100000)")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    parser.add_argument("--min-counts", type=int, nargs="+", metavar="N",
                        help="per order, the least count an n-gram needs to stay (default 1 2 3, then 3 for "
                             "higher orders; the first must be 1)")
    parser.add_argument("--blocklist", metavar="FILE",
                        help="SHA-1s of evaluation text (e.g. ../shared/data/eval-blocklist.txt): sentences "
                             f"that contain one are dropped, documents with more than {MAX_DOCUMENT_MATCHES} whole; "
                             "the dev-split transcripts of the manifests given are blocked too")
    parser.add_argument("--gzip", action="store_true", help="write words.arpa.gz")


class Blocklist:
    """SHA-1s (hex, one a line) of every 8-word window of normalised evaluation transcripts, or
    of the whole transcript when it is shorter."""

    def __init__(self, path):
        lines = Path(path).read_text().split()
        try:
            self.hashes = {bytes.fromhex(line) for line in lines}
        except ValueError as err:
            raise ValueError(f"{path}: not a list of SHA-1 hex digests ({err})") from err

    def add_transcripts(self, texts: list[str]) -> None:
        """Block these transcripts too: the dev splits of the manifests read, whose held-out
        speakers the shared blocklist does not all cover."""
        for words in (text.split() for text in texts):
            windows = [words[i:i + WINDOW] for i in range(len(words) - WINDOW + 1)] or [words]
            self.hashes |= {digest(window) for window in windows}

    def listed(self, words: list[str]) -> bool:
        return digest(words) in self.hashes

    def blocked(self, sentences: list[list[str]]) -> tuple[set[int], int]:
        """The sentences of a document to drop, and how many of its 8-word windows are listed.
        The document is read as one stream of words, so a window that crosses a sentence end is
        found too; every sentence it overlaps is dropped, and so is a sentence shorter than a
        window that is listed whole."""
        words = [word for sentence in sentences for word in sentence]
        sentence_of = [k for k, sentence in enumerate(sentences) for _ in sentence]
        hits = [i for i in range(len(words) - WINDOW + 1) if self.listed(words[i:i + WINDOW])]
        dropped = {k for i in hits for k in range(sentence_of[i], sentence_of[i + WINDOW - 1] + 1)}
        dropped |= {k for k, sentence in enumerate(sentences) if len(sentence) < WINDOW and self.listed(sentence)}
        return dropped, len(hits)


def digest(words: list[str]) -> bytes:
    """The blocklist's hash of a window of normalised words."""
    return hashlib.sha1(" ".join(words).encode()).digest()


class Corpus:
    """The kept sentences as one stream of provisional word ids (numbered as first seen), each
    sentence between -1 (its start) and -2 (its end)."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.ids = array("i")
        self.sentences = 0

    def add(self, sentence: list[str]) -> None:
        index = self.index
        self.ids.append(-1)
        self.ids.extend([index.setdefault(word, len(index)) for word in sentence])
        self.ids.append(-2)
        self.sentences += 1

    def word_counts(self) -> np.ndarray:
        ids = np.frombuffer(self.ids, dtype=np.int32)
        return np.bincount(ids[ids >= 0], minlength=len(self.index))

    def vocabulary(self, size: int) -> list[str]:
        """The `size` most frequent words, most frequent first (ties: first seen first)."""
        words = list(self.index)
        return [words[i] for i in np.argsort(-self.word_counts(), kind="stable")[:size]]

    def stream(self, vocabulary: list[str]) -> np.ndarray:
        """The ids of the n-gram: <s> 0, </s> 1, <unk> 2, vocabulary[i] 3 + i."""
        lookup = np.full(len(self.index) + 2, UNK, dtype=np.int32)
        lookup[:2] = EOS, BOS
        lookup[[self.index[word] + 2 for word in vocabulary]] = np.arange(len(vocabulary)) + len(SPECIAL)
        return lookup[np.frombuffer(self.ids, dtype=np.int32) + 2]


def load_blocklist(path: str | None, sources: list[str]) -> Blocklist | None:
    """The --blocklist file, plus the dev-split transcripts of the manifests among `sources`."""
    if not path:
        return None
    blocklist = Blocklist(path)
    blocklist.add_transcripts([u.text for source in sources if source.endswith(".jsonl")
                               for u in load_manifest(source, "dev")])
    return blocklist


def kept_sentences(sources: list[str], blocklist: Blocklist | None, tally: Counter) -> Iterator[list[str]]:
    """The sources' sentences less what the blocklist drops, counting in `tally` what it dropped."""
    for name, sentences in corpus_documents(sources):
        tally["documents"] += 1
        tally["sentences"] += len(sentences)
        dropped, hits = blocklist.blocked(sentences) if blocklist else (set(), 0)
        if hits > MAX_DOCUMENT_MATCHES:
            print(f"dropped {name}: {hits} blocked 8-word windows", flush=True)
            tally["documents dropped"] += 1
            tally["sentences in them"] += len(sentences)
            continue
        tally["sentences dropped"] += len(dropped)
        yield from (sentence for k, sentence in enumerate(sentences) if k not in dropped)


def read_sentences(sources: list[str], blocklist_path: str | None) -> list[list[str]]:
    """The kept sentences as a list (for `train lm` and `synth`), saying what the blocklist dropped."""
    tally = Counter()
    sentences = list(kept_sentences(sources, load_blocklist(blocklist_path, sources), tally))
    print(summary(tally, blocklist_path is not None), flush=True)
    return sentences


def read_corpus(sources: list[str], blocklist: Blocklist | None) -> Corpus:
    """The sources' kept sentences, with a summary of what the blocklist dropped."""
    corpus, tally = Corpus(), Counter()
    for sentence in kept_sentences(sources, blocklist, tally):
        corpus.add(sentence)
    print(summary(tally, blocklist is not None), flush=True)
    if not corpus.sentences:
        raise ValueError(f"no sentences left in {' '.join(map(str, sources))}")
    return corpus


def summary(tally: Counter, blocked: bool) -> str:
    line = f"read {tally['documents']} documents (text files, and transcripts one by one), {tally['sentences']} sentences"
    if not blocked:
        return line + " (no --blocklist: nothing dropped)"
    return (f"{line}; the blocklist dropped {tally['documents dropped']} documents whole "
            f"({tally['sentences in them']} sentences) and {tally['sentences dropped']} sentences of the others")


def default_min_counts(order: int) -> list[int]:
    return [min(k, 3) for k in range(1, order + 1)]


def check_arguments(args) -> list[int]:
    if args.vocab_size < 1 or args.order < 1:
        raise ValueError(f"--vocab-size and --order must be positive, got {args.vocab_size} and {args.order}")
    min_counts = args.min_counts or default_min_counts(args.order)
    check_min_counts(args.order, min_counts)
    return min_counts


def main(args) -> None:
    min_counts = check_arguments(args)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = read_corpus(args.text, load_blocklist(args.blocklist, args.text))
    words = corpus.vocabulary(args.vocab_size)
    ids = corpus.stream(words)
    known = np.count_nonzero(ids > UNK) / max(1, len(ids) - 2 * corpus.sentences)
    print(f"{len(ids) - 2 * corpus.sentences} words in {corpus.sentences} sentences; vocabulary {len(words)} "
          f"of {len(corpus.index)} words, covering {known:.2%} of the text ({time.perf_counter() - started:.0f} s)",
          flush=True)
    del corpus
    model = NgramModel(kneser_ney(ids, len(words) + len(SPECIAL), args.order, BOS, EOS, min_counts),
                       len(words) + len(SPECIAL), pad=BOS)
    del ids
    (out / "words.txt").write_text("".join(word + "\n" for word in words))
    arpa = out / ("words.arpa.gz" if args.gzip else "words.arpa")
    model.write_arpa(arpa, SPECIAL + words, bos=BOS, gzipped=args.gzip)
    counts = " ".join(f"{k}-grams {len(level.keys)}" for k, level in enumerate(model.levels, 1))
    print(f"wrote {out / 'words.txt'} and {arpa}: {counts} ({time.perf_counter() - started:.0f} s)")
