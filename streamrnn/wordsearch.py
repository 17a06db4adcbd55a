"""Lexicon-constrained CTC beam search: the search spells only words of a vocabulary, scored by a
word n-gram LM (KenLM format) in first-pass fusion, in flashlight-text's C++ decoder.

One `WordSearch` holds the n-gram and the lexicon trie for every session; each session steps its
own `WordDecoder` one CTC frame at a time, so its results do not depend on how its audio was
chunked. Endpoints come from the frames themselves (a run of frames whose likeliest token is not
a letter or phone), which every chunking sees alike; the beam's best path is read only for partials and
finals. A session's phrases may hold words outside the vocabulary: they are spelled and added to
a trie of that session's own (cached by phrase set), and every phrase word earns a bonus.

A word is spelled in the acoustic model's tokens: its letters for a character model, its
pronunciations (CMUdict's, or a dictionary in its format) for a phone model. The word separator is
token 1 in both: the space, or the phone inventory's word boundary.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from flashlight.lib.text.decoder import LM, CriterionType, LexiconDecoder, LexiconDecoderOptions, SmearingMode, Trie
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from streamrnn.config import DecoderConfig, EndpointConfig
from streamrnn.decoding import Utterance, Word
from streamrnn.phones import BOUNDARY, Lexicon, PhoneInventory, pronunciations
from streamrnn.tokens import ALPHABET, BLANK, SPACE, TOKEN_ID, normalize

UNK = "<unk>"
SPELLABLE = re.compile("[A-Z'][A-Z']*")
NOT_A_UNIT = (BLANK, SPACE)  # what no word is spelled with: blank and the word separator
PHRASE_TRIES = 16  # tries with a session's extra words, kept for the next session with the same phrases


class WordSearch:
    """The vocabulary, its n-gram and its lexicon trie, loaded once and shared by every session."""

    def __init__(self, config: DecoderConfig, ngram_path: str, vocabulary_path: str, speller=None):
        self.config = config
        self.speller = speller or LetterSpeller()
        self.words = read_vocabulary(vocabulary_path)
        self.index = {word: i for i, word in enumerate(self.words)}
        self.unk = len(self.words)
        with quiet_stderr():  # KenLM draws a progress bar there while it reads the file
            self.ngram = KenLM(str(ngram_path), Dictionary(self.words + [UNK]))
        start = self.ngram.start(False)
        self.unigram = [self.ngram.score(start, i)[1] for i in range(len(self.words))]
        with quiet_stderr():  # the trie says there when a pronunciation has more than 6 homophones
            self.trie, self.unspellable = self.build_trie([])
        self.extra: dict[str, int] = {}  # words outside the vocabulary that phrases brought: their indices
        self.extra_words: dict[int, str] = {}
        self.phrase_tries: OrderedDict[frozenset, Trie] = OrderedDict()

    def build_trie(self, extra: list[tuple[str, int]]) -> tuple[Trie, list[str]]:
        """The vocabulary's trie, with the `extra` words; and the vocabulary words it cannot spell."""
        trie, unspellable = Trie(self.speller.size, SPACE), []
        for index, word in enumerate(self.words):
            spellings = self.speller.spell(word)
            if not spellings:
                unspellable.append(word)
            for tokens in spellings:
                trie.insert(tokens + [SPACE], index, self.unigram[index])
        for word, index in extra:
            for tokens in self.speller.spell(word, guess=True):
                trie.insert(tokens + [SPACE], index, self.unigram_of_unknown())
        trie.smear(SmearingMode.MAX)
        return trie, unspellable

    def unigram_of_unknown(self) -> float:
        return self.ngram.score(self.ngram.start(False), self.unk)[1]

    def word(self, index: int) -> str:
        return self.words[index] if index < len(self.words) else self.extra_words[index]

    def decoder(self, phrases: list[str]) -> tuple[LexiconDecoder, LM]:
        """A search for one session, and the LM it scores with (which must outlive it): the shared
        trie and n-gram, or with `phrases`, a trie that also spells their words and an n-gram that
        gives each of them a bonus."""
        words = {word for phrase in phrases for word in normalize(phrase).split()}
        lm, trie = self.ngram, self.trie
        if words:
            bonus = {self.index_of(word): self.config.phrase_word_bonus for word in words}
            lm = PhraseBonusLM(self.ngram, self.unk, bonus)
            trie = self.trie_with(frozenset(word for word in words if word not in self.index))
        options = LexiconDecoderOptions(
            beam_size=self.config.word_beam_size, beam_size_token=min(self.config.word_beam_tokens, self.speller.size),
            beam_threshold=self.config.word_beam_threshold, lm_weight=self.config.ngram_weight,
            word_score=self.config.word_score, unk_score=-float("inf"), sil_score=0.0, log_add=False,
            criterion_type=CriterionType.CTC)
        return LexiconDecoder(options, trie, lm, SPACE, BLANK, self.unk, [], False), lm

    def index_of(self, word: str) -> int:
        if word in self.index:
            return self.index[word]
        if word not in self.extra:
            self.extra[word] = len(self.words) + 1 + len(self.extra)
            self.extra_words[self.extra[word]] = word
        return self.extra[word]

    def trie_with(self, unknown: frozenset) -> Trie:
        if not unknown:
            return self.trie
        if unknown not in self.phrase_tries:
            self.phrase_tries[unknown] = self.build_trie([(word, self.index_of(word)) for word in sorted(unknown)])[0]
            if len(self.phrase_tries) > PHRASE_TRIES:
                self.phrase_tries.popitem(last=False)
        self.phrase_tries.move_to_end(unknown)
        return self.phrase_tries[unknown]


class PhraseBonusLM(LM):
    """The n-gram with a bonus for a session's phrase words; words outside its vocabulary are scored
    as its unknown word."""

    def __init__(self, ngram: KenLM, unk: int, bonus: dict[int, float]):
        LM.__init__(self)
        self.ngram, self.unk, self.bonus = ngram, unk, bonus

    def start(self, start_with_nothing: bool):
        return self.ngram.start(start_with_nothing)

    def score(self, state, token: int):
        state, score = self.ngram.score(state, min(token, self.unk))
        return state, score + self.bonus.get(token, 0.0)

    def finish(self, state):
        return self.ngram.finish(state)


@contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null for a while (C++ code writes there, not to sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_vocabulary(path) -> list[str]:
    """One word a line, spelled in the acoustic model's letters; other lines are left out."""
    words = Path(path).read_text().split()
    return [word for word in dict.fromkeys(words) if SPELLABLE.fullmatch(word)]


class LetterSpeller:
    """A character model's words: their letters."""

    size = len(ALPHABET) + 1

    def spell(self, word: str, guess: bool = False) -> list[list[int]]:
        return [[TOKEN_ID[ch] for ch in word]]

    def pending(self, tokens) -> str:
        return pending_letters(tokens)


class PhoneSpeller:
    """A phone model's words: each of their pronunciations in the lexicon. Words it lacks cannot
    be spelled, except a phrase's, which are looked up in `phrase_lexicon()` (when given: a larger
    dictionary, loaded only once a phrase needs it), then get the G2P model's guess."""

    def __init__(self, inventory: PhoneInventory, lexicon: Lexicon, phrase_lexicon=None):
        if inventory.ids.get(BOUNDARY) != SPACE:
            raise ValueError("the lexicon search needs a phone model trained with word boundaries")
        self.size, self.ids, self.lexicon = len(inventory.tokens), inventory.ids, lexicon
        self.phrase_lexicon = phrase_lexicon

    def spell(self, word: str, guess: bool = False) -> list[list[int]]:
        lexicon = self.lexicon
        if guess and self.phrase_lexicon and not pronunciations(lexicon, word):
            lexicon = self.phrase_lexicon()
        return [[self.ids[phone] for phone in phones] for phones in pronunciations(lexicon, word, guess)]

    def pending(self, tokens) -> str:
        return ""  # a word being spoken shows once its phones spell one


class WordDecoder:
    """One session's search, with the interface of `decoding.Decoder`: `advance_row` per CTC frame,
    `finish_utterance`, `partial_text`, and the LSTM LM's next words after each final."""

    def __init__(self, search: WordSearch, endpoint: EndpointConfig, step_s: float, phrases: list[str] = (),
                 lm=None, lm_start=None):
        self.search, self.endpoint, self.step_s = search, endpoint, step_s
        self.decoder, self.lm_with_bonus = search.decoder(list(phrases))  # the LM object must outlive the decoder
        self.lm, self.lm_state = lm, lm_start[0] if lm_start else None  # the LM's state after the finals
        self.scorer = None  # no LSTM LM inside the search: nothing for the engine to prefetch
        self.step = 0
        self.start_utterance()

    def start_utterance(self) -> None:
        self.decoder.decode_begin()
        self.utterance_start = self.step
        self.rows: list[np.ndarray] = []
        self.last_spoken = -1  # the last frame (from the utterance start) whose likeliest token spells a word

    def advance_row(self, row: np.ndarray) -> Utterance | None:
        row = np.ascontiguousarray(row, dtype=np.float32)
        self.decoder.decode_step(row.ctypes.data, 1, len(row))
        if int(row.argmax()) not in NOT_A_UNIT:
            self.last_spoken = len(self.rows)
        self.rows.append(row)
        self.step += 1
        if not self.at_endpoint():
            return None
        utterance = self.finish_utterance()
        return utterance if utterance.text else None

    def at_endpoint(self) -> bool:
        frames = len(self.rows)
        if self.last_spoken < 0:
            return frames * self.step_s * 1000 >= self.endpoint.leading_silence_ms
        silence_ms = (frames - 1 - self.last_spoken) * self.step_s * 1000
        return silence_ms >= self.endpoint.trailing_silence_ms or frames * self.step_s >= self.endpoint.max_utterance_s

    def finish_utterance(self) -> Utterance:
        """Close the last word (one frame of pure word separator), take the best path, start anew."""
        separator = np.full(self.search.speller.size, -1e30, dtype=np.float32)
        separator[SPACE] = 0.0
        self.decoder.decode_step(separator.ctypes.data, 1, len(separator))
        self.decoder.decode_end()
        best = self.decoder.get_best_hypothesis()
        words = self.timed_words(best)
        utterance = Utterance(" ".join(w.word for w in words), words, round(self.utterance_start * self.step_s, 3),
                              round(self.step * self.step_s, 3))
        if words and self.lm is not None:
            self.lm_state, _ = self.lm.advance(self.lm_state, [w.word for w in words])
        self.start_utterance()
        return utterance

    def timed_words(self, best) -> list[Word]:
        """The best path's words with their frames: a word spans its letters' (or phones') frames
        and the blanks between them; its confidence is the mean probability of those frames."""
        frames = best.tokens[1:len(self.rows) + 1]  # token per frame; the first is the start state
        spans, start, letters = [], None, []
        for frame, token in enumerate(list(frames) + [SPACE]):
            if token == SPACE and start is not None:
                spans.append((start, letters[-1], letters))
                start, letters = None, []
            elif token != SPACE and token != BLANK:
                start = frame if start is None else start
                letters.append(frame)
        indices = [w for w in best.words if w >= 0]
        words = []
        for index, (first, last, letter_frames) in zip(indices, spans):
            log_prob = np.mean([self.rows[f][frames[f]] for f in letter_frames])
            offset = self.utterance_start
            words.append(Word(self.search.word(index), round((offset + first) * self.step_s, 3),
                              round((offset + last + 1) * self.step_s, 3), round(float(np.exp(log_prob)), 3)))
        return words

    def partial_text(self) -> str:
        best = self.decoder.get_best_hypothesis()
        words = [self.search.word(w) for w in best.words if w >= 0]
        return " ".join(words + [self.search.speller.pending(best.tokens)]).strip()

    def next_word_log_probs(self) -> np.ndarray | None:
        """Made from the LM's state when asked (once a final): a quiet session keeps the state
        (4 KB), not the distribution (40 KB)."""
        return self.lm.state_log_probs(self.lm_state) if self.lm is not None else None

    def lm_histories(self) -> list:
        return []


def pending_letters(tokens) -> str:
    """The letters of the word the best path is spelling now (CTC-collapsed), after its last separator."""
    letters, previous = [], None
    for token in reversed(list(tokens)):
        if token == SPACE:
            break
        if token != BLANK and token != previous and token >= 0:
            letters.append(ALPHABET[token - 1])
        previous = token
    return "".join(reversed(letters))
