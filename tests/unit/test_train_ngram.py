"""`streamrnn train ngram` on a small corpus made here: the blocklist drops sentences and a whole
document, dev transcripts stay out, the vocabulary is the most frequent words, and the n-gram it
writes loads in KenLM, prefers what it saw and drives the lexicon search."""
import contextlib
import gzip
import hashlib
import io
import json
from collections import Counter

import numpy as np
import pytest
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from streamrnn.cli import main
from streamrnn.config import DecoderConfig, EndpointConfig
from streamrnn.tokens import ALPHABET, BLANK, SPACE, TOKEN_ID, normalize
from streamrnn.wordsearch import WordDecoder, WordSearch

EVALUATION = ["It is a truth universally acknowledged, that a single man in possession",  # 12 words: 5 windows
              "Good morning, Mister Bennet!"]  # shorter than a window: listed whole
VOCAB_SIZE = 17  # of 18 words kept: all but WOMBAT


def window_hashes(text: str) -> list[str]:
    words = normalize(text).split()
    windows = [words[i:i + 8] for i in range(len(words) - 7)] or [words]
    return [hashlib.sha1(" ".join(w).encode()).hexdigest() for w in windows]


def made_up_sentences(rng, count: int) -> list[str]:
    """Sentences like "The cat sat on a mat.": a verb is never followed by a noun."""
    nouns = ["cat", "dog", "bird", "fox", "mat", "log", "hill"]
    verbs = ["sat", "ran", "slept", "stood"]
    return [f"{rng.choice(['The', 'A'])} {rng.choice(nouns)} {rng.choice(verbs)} {rng.choice(['on', 'near', 'under'])} "
            f"{rng.choice(['the', 'a'])} {rng.choice(nouns)}." for _ in range(count)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    books = folder / "books"
    books.mkdir()
    clean = made_up_sentences(rng, 200) + ["A wombat sat on the log."]  # WOMBAT: once, outside the vocabulary
    (books / "a_clean.txt").write_text(" ".join(clean))
    quoting = made_up_sentences(rng, 100)
    quoting[10:10] = ["It is a truth universally.", "Acknowledged that a single man!"]  # 3 windows, across the end
    quoting[50:50] = ["Good morning, Mister Bennet!"]
    (books / "b_quoting.txt").write_text("\n".join(quoting))
    source = made_up_sentences(rng, 100) + [EVALUATION[0] + " of a good fortune."] * 2 + ["Netherfield is let."]
    (books / "c_source.txt").write_text(" ".join(source))  # 10 blocked windows: dropped whole
    manifest = folder / "speech.jsonl"
    utterances = [("the quokka sat on the mat", "train")] * 3 + [("good morning mister bennet", "train"),
                                                                ("the zephyr sat on the mat", "dev")]
    manifest.write_text("".join(json.dumps({"audio": f"{i}.flac", "text": text, "speaker": "s", "split": split})
                                + "\n" for i, (text, split) in enumerate(utterances)))
    blocklist = folder / "blocklist.txt"
    blocklist.write_text("".join(h + "\n" for text in EVALUATION for h in window_hashes(text)))
    out = folder / "lm"
    kept = [normalize(s).split() for s in clean + quoting[:10] + quoting[12:50] + quoting[51:]] + \
           [normalize(t).split() for t, _ in utterances[:3]]
    return {"args": ["train", "ngram", "--text", str(books), str(manifest), "--out", str(out), "--blocklist",
                     str(blocklist), "--vocab-size", str(VOCAB_SIZE), "--gzip"], "out": out, "kept": kept}


@pytest.fixture(scope="module")
def output(built):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(built["args"])
    return printed.getvalue()


def test_the_blocklist_drops_sentences_and_a_document(built, output):
    assert "c_source.txt: 10 blocked 8-word windows" in output
    # in b_quoting the 2 sentences that listed windows cross and 1 listed whole; 1 transcript listed whole
    assert "dropped 1 documents whole (103 sentences) and 4 sentences of the others" in output
    assert f"{sum(map(len, built['kept']))} words in {len(built['kept'])} sentences" in output


def test_the_vocabulary_is_the_most_frequent_words_of_what_was_kept(built, output):
    words = (built["out"] / "words.txt").read_text().split()
    counts = Counter(word for sentence in built["kept"] for word in sentence)
    assert words == [word for word, _ in counts.most_common(VOCAB_SIZE)]
    assert "QUOKKA" in words  # train transcripts count
    assert not {"ZEPHYR", "NETHERFIELD", "BENNET", "WOMBAT"} & set(words)  # dev, dropped, blocked, rare


def test_kenlm_loads_it_and_prefers_what_it_saw(built, output):
    words = (built["out"] / "words.txt").read_text().split()
    with gzip.open(built["out"] / "words.arpa.gz", "rt") as arpa:
        header = [next(arpa) for _ in range(2)]
    assert header[1] == f"ngram 1={len(words) + 3}\n"
    kenlm = KenLM(str(built["out"] / "words.arpa.gz"), Dictionary(words + ["<unk>"]))

    def score(*history_and_word):
        state = kenlm.start(False)
        for word in history_and_word:
            state, result = kenlm.score(state, words.index(word))
        return result
    assert score("THE", "CAT") > score("SAT", "CAT")  # a verb was never followed by a noun
    assert score("CAT", "SAT", "ON") > score("CAT", "SAT", "THE")


def spoken(*words: str) -> np.ndarray:
    """CTC log-prob frames that spell the words clearly, with blanks and spaces between letters."""
    def frame(token: int, p: float = 0.9) -> np.ndarray:
        row = np.full(len(ALPHABET) + 1, (1 - p) / len(ALPHABET))
        row[token] = p
        return np.log(row).astype(np.float32)
    rows = [frame(BLANK)] * 3
    for word in words:
        for letter in word:
            rows += [frame(TOKEN_ID[letter])] * 2 + [frame(BLANK)]
        rows += [frame(SPACE), frame(BLANK), frame(BLANK)]
    return np.array(rows + [frame(BLANK)] * 30)


def test_its_output_drives_the_lexicon_search(built, output):
    search = WordSearch(DecoderConfig(), built["out"] / "words.arpa.gz", built["out"] / "words.txt")
    decoder = WordDecoder(search, EndpointConfig(trailing_silence_ms=800), 0.04, [])
    utterances = [u for row in spoken("THE", "FOX", "SLEPT") if (u := decoder.advance_row(row))]
    utterances.append(decoder.finish_utterance())
    assert " ".join(u.text for u in utterances if u.text) == "THE FOX SLEPT"


def test_bad_arguments_are_refused_before_reading(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "ngram", "--text", str(tmp_path / "missing"), "--out", str(tmp_path), "--min-counts", "1", "2"])
    assert exit.value.code == 2 and "need 3 minimum counts" in capsys.readouterr().err


def test_the_dev_transcripts_of_the_manifests_read_are_blocked_too(tmp_path):
    """The shared blocklist does not cover every held-out speaker of the shared manifests."""
    manifest = tmp_path / "speech.jsonl"
    utterances = [("hello there my friend", "dev"), ("hello there my friend", "train"), ("the cat sat", "train")]
    manifest.write_text("".join(json.dumps({"audio": f"{i}.flac", "text": text, "speaker": "s", "split": split})
                                + "\n" for i, (text, split) in enumerate(utterances)))
    (tmp_path / "empty.txt").write_text("")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["train", "ngram", "--text", str(manifest), "--out", str(tmp_path / "lm"),
              "--blocklist", str(tmp_path / "empty.txt")])
    assert (tmp_path / "lm" / "words.txt").read_text().split() == ["THE", "CAT", "SAT"]
    assert "1 sentences of the others" in printed.getvalue()


def test_book_typography_normalises_as_transcripts_do():
    """Curly apostrophes are apostrophes (not word breaks that split DIDN'T into DIDN T) and
    accented letters lose their accents, so book text matches transcripts and the blocklist."""
    assert normalize("He didn\u2019t read \u2018Les Mis\u00e9rables\u2019, O\u2019Brien\u2019s caf\u00e9.") == \
        "HE DIDN'T READ LES MISERABLES O'BRIEN'S CAFE"
