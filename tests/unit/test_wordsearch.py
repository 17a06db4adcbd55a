"""The lexicon search (flashlight-text's decoder with a KenLM n-gram) on made-up CTC frames, and
its phrase biasing; tests/unit/test_streaming.py pins streaming against offline on real speech."""

import numpy as np
import pytest

from streamrnn.checkpoint import load_model
from streamrnn.config import DecoderConfig, EndpointConfig, model_path
from streamrnn.engine.recognizer import word_speller
from streamrnn.phones import PhoneInventory
from streamrnn.tokens import ALPHABET, BLANK, SPACE, TOKEN_ID
from streamrnn.wordsearch import PhoneSpeller, WordDecoder, WordSearch, pending_letters

WORDS = ["THE", "CAT", "SAT", "MAT", "ON"]
ARPA = """\\data\\
ngram 1=8
ngram 2=3

\\1-grams:
-1.0\t<s>\t-0.3
-1.0\t</s>
-0.7\tTHE\t-0.3
-1.0\tCAT\t-0.3
-1.0\tSAT\t-0.3
-1.0\tMAT\t-0.3
-1.0\tON\t-0.3
-3.0\t<unk>

\\2-grams:
-0.2\tTHE CAT
-0.2\tCAT SAT
-0.2\tSAT ON

\\end\\
"""
STEP_S = 0.04


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ngram")
    (folder / "words.arpa").write_text(ARPA)
    (folder / "words.txt").write_text("\n".join(WORDS) + "\n")
    return WordSearch(DecoderConfig(), folder / "words.arpa", folder / "words.txt")


def frames(spec: list[tuple[dict[str, float], int]]) -> np.ndarray:
    """CTC log-prob rows: each (token probabilities, frame count); what is left goes to blank."""
    rows = []
    for probs, count in spec:
        row = np.full(len(ALPHABET) + 1, 1e-4)
        for token, p in probs.items():
            row[TOKEN_ID[token] if token != "_" else BLANK] = p
        row[BLANK] += max(0.0, 1 - row.sum())
        rows += [np.log(row / row.sum()).astype(np.float32)] * count
    return np.array(rows)


def spoken(*words_with_letters) -> np.ndarray:
    spec = [({"_": 1.0}, 3)]
    for letters in words_with_letters:
        for letter in letters:
            spec += [(letter, 2), ({"_": 1.0}, 1)]
        spec += [({" ": 0.9}, 1), ({"_": 1.0}, 2)]
    return frames(spec + [({"_": 1.0}, 30)])


def decode(search, rows, phrases=()):
    decoder = WordDecoder(search, EndpointConfig(trailing_silence_ms=800), STEP_S, list(phrases))
    utterances = [u for row in rows if (u := decoder.advance_row(row))]
    last = decoder.finish_utterance()
    return utterances + ([last] if last.text else [])


def test_only_words_of_the_vocabulary_come_out(search):
    rows = spoken([{"C": 0.9}, {"A": 0.9}, {"T": 0.9}], [{"S": 0.9}, {"A": 0.9}, {"T": 0.9}])
    [utterance] = decode(search, rows)
    assert utterance.text == "CAT SAT"
    rows = spoken([{"K": 0.9}, {"A": 0.9}, {"T": 0.9}])  # KAT is not a word it knows
    assert all(u.text != "KAT" for u in decode(search, rows))


def test_word_times_and_confidence_follow_the_frames(search):
    rows = spoken([{"C": 0.9}, {"A": 0.9}, {"T": 0.9}], [{"S": 0.5, "M": 0.4}, {"A": 0.9}, {"T": 0.9}])
    [utterance] = decode(search, rows)
    cat, second = utterance.words
    assert cat.word == "CAT" and cat.start == pytest.approx(3 * STEP_S) and cat.end == pytest.approx(11 * STEP_S)
    assert second.start >= cat.end and 0 < second.conf < cat.conf <= 1


def test_a_phrase_spells_a_word_outside_the_vocabulary(search):
    rows = spoken([{"K": 0.9}, {"A": 0.9}, {"T": 0.9}])
    [utterance] = decode(search, rows, phrases=["kat"])
    assert utterance.text == "KAT"
    assert all(u.text != "KAT" for u in decode(search, rows))  # the shared trie is not changed


def test_a_phrase_flips_a_close_decision(search):
    rows = spoken([{"S": 0.45, "M": 0.55}, {"A": 0.9}, {"T": 0.9}])
    assert [u.text for u in decode(search, rows)] == ["MAT"]
    assert [u.text for u in decode(search, rows, phrases=["SAT"])] == ["SAT"]


def test_the_partial_shows_the_word_being_spelled():
    tokens = [SPACE, TOKEN_ID["C"], TOKEN_ID["C"], BLANK, TOKEN_ID["A"], SPACE, TOKEN_ID["S"], BLANK, TOKEN_ID["S"]]
    assert pending_letters(tokens) == "SS"


PHONE_LEXICON = {"THE": [("DH", "AH"), ("DH", "IY")], "CAT": [("K", "AE", "T")], "SAT": [("S", "AE", "T")],
                 "MAT": [("M", "AE", "T")], "ON": [("AA", "N")]}


@pytest.fixture(scope="module")
def phone_search(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ngram")
    (folder / "words.arpa").write_text(ARPA)
    (folder / "words.txt").write_text("\n".join(WORDS) + "\n")
    speller = PhoneSpeller(PhoneInventory(), PHONE_LEXICON)
    return WordSearch(DecoderConfig(), folder / "words.arpa", folder / "words.txt", speller)


def phone_frames(inventory, *words) -> np.ndarray:
    """Clear phone frames for each word's phones, the boundary token between words."""
    size, rows = len(inventory.tokens), []

    def add(token, count):
        row = np.full(size, 1e-4)
        row[inventory.ids[token]] = 0.9
        rows.extend([np.log(row / row.sum()).astype(np.float32)] * count)

    for k, phones in enumerate(words):
        if k:
            add("|", 1)
        for phone in phones:
            add(phone, 2)
            add("<blank>", 1)
    add("<blank>", 30)
    return np.array(rows)


def test_a_phone_model_spells_words_by_their_pronunciations(phone_search):
    inventory = PhoneInventory()
    rows = phone_frames(inventory, ("DH", "IY"), ("K", "AE", "T"), ("S", "AE", "T"))
    [utterance] = decode(phone_search, rows)
    assert utterance.text == "THE CAT SAT"  # THE by its second pronunciation
    assert [w.start for w in utterance.words] == sorted(w.start for w in utterance.words)
    assert all(0 < w.conf <= 1 for w in utterance.words)


def test_a_phone_models_phrase_word_outside_the_lexicon_is_spelled_by_the_g2p_model(phone_search):
    inventory = PhoneInventory()
    rows = phone_frames(inventory, ("K", "AE", "T"), ("D", "AO", "G"))
    assert "DOG" not in decode(phone_search, rows)[0].text
    assert decode(phone_search, rows, phrases=["cat dog"])[0].text == "CAT DOG"


def test_the_builtin_pronunciations_spell_phrase_words_from_cmudict_before_guessing():
    """The shipped words.dict covers the vocabulary; a phrase word outside it (AARHUS) still gets
    CMUdict's pronunciation, where the G2P model would guess AA R HH UW S."""
    tokens = load_model("acoustic", model_path("builtin", "am.pt")).config.tokens
    speller = word_speller(DecoderConfig(), tuple(tokens))
    assert "AARHUS" not in speller.lexicon
    phones = [[tokens[i] for i in spelling] for spelling in speller.spell("AARHUS", guess=True)]
    assert phones == [["AA", "HH", "UW", "S"]]
    assert speller.spell("AARHUS") == []  # not a phrase's: the vocabulary's search cannot spell it
    assert speller.spell("ZEBRA") == speller.spell("ZEBRA", guess=True) != []
