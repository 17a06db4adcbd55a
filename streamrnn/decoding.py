"""Incremental CTC prefix beam search with word-LM shallow fusion, phrase
biasing, endpointing, word timings and per-word confidence.

The decoder takes CTC log-probs one step at a time, so its results do not
depend on how the audio was chunked; it keeps its beam between calls.
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from streamrnn.biasing import PhraseTrie
from streamrnn.config import DecoderConfig, EndpointConfig
from streamrnn.tokens import ALPHABET, BLANK, SPACE, TOKEN_ID

NEG_INF = -math.inf
ROUNDING_SLACK = 1e-6  # pruning tests are loosened by this much, so rounding never prunes a contender


def log_add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == NEG_INF else a + math.log1p(math.exp(b - a))


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    conf: float


@dataclass(slots=True)
class Hypothesis:
    text: str = ""
    p_blank: float = 0.0
    p_nonblank: float = NEG_INF
    bonus: float = 0.0  # LM fusion, word bonus and phrase bonus earned so far
    words: tuple = ()  # completed words as (word, start_step, end_step, confidence)
    history: tuple = ()  # just the completed words: the LM's context
    word_start: int = -1
    word_log_prob: float = 0.0
    last_step: int = -1
    bias_node: int = 0
    bias_pending: float = 0.0
    acoustic: float = 0.0  # log_add(p_blank, p_nonblank), kept by set_probs: read many times a step

    def set_probs(self, p_blank: float, p_nonblank: float) -> None:
        self.p_blank, self.p_nonblank, self.acoustic = p_blank, p_nonblank, log_add(p_blank, p_nonblank)

    def clone(self) -> "Hypothesis":
        """A copy (much cheaper than dataclasses.replace on this hot path)."""
        return Hypothesis(self.text, self.p_blank, self.p_nonblank, self.bonus, self.words, self.history,
                          self.word_start, self.word_log_prob, self.last_step, self.bias_node, self.bias_pending,
                          self.acoustic)

    @property
    def score(self) -> float:
        return self.acoustic + self.bonus + self.bias_pending

    @property
    def current_word(self) -> str:
        return self.text[self.text.rfind(" ") + 1:]


@dataclass
class Utterance:
    """What an endpoint or the end of the stream produces."""
    text: str
    words: list[Word]
    start: float
    end: float


class Decoder:
    def __init__(self, config: DecoderConfig, endpoint: EndpointConfig, step_s: float,
                 scorer_factory=None, phrases: list[str] = ()):
        self.config = config
        self.endpoint = endpoint
        self.step_s = step_s
        self.greedy = config.method == "greedy"
        self.beam_size = 1 if self.greedy else config.beam_size
        self.scorer_factory = None if self.greedy else scorer_factory
        self.trie = PhraseTrie(list(phrases), config.phrase_bonus)
        self.has_phrases = bool(self.trie)
        self.letter_reach = max(0.0, -config.lm_weight * config.unk_penalty) + 1e-6
        self.space_reach = self.letter_reach + (config.word_bonus if config.lm_weight >= 0 else math.inf)
        self.step = 0
        self.scorer = None
        self.reset([])

    def reset(self, context: list[str]) -> None:
        """Start a new utterance; the LM reads on after the `context` words just decoded."""
        self.beam = [Hypothesis()]
        self.utterance_start = self.step
        if self.scorer_factory is None:
            self.scorer = None
        elif self.scorer is None:
            self.scorer = self.scorer_factory(None)
        elif context:
            state, _ = self.scorer.entry(tuple(context))
            self.scorer = self.scorer_factory((state, None))

    def next_word_log_probs(self) -> np.ndarray | None:
        """The LM's next-word distribution after everything finalised so far."""
        return self.scorer.root_log_probs() if self.scorer else None

    @property
    def best(self) -> Hypothesis:
        return self.beam[0]

    def advance(self, log_probs: torch.Tensor) -> list[Utterance]:
        """Decode (steps, vocab) log-probs; return the utterances that ended inside them."""
        finished = []
        for row in log_probs.tolist():
            utterance = self.advance_row(row)
            if utterance:
                finished.append(utterance)
        return finished

    def advance_row(self, row: list[float]) -> Utterance | None:
        """Decode one step's log-probs; the utterance it ends, if any."""
        self.decode_step(row)
        self.step += 1
        if self.at_endpoint():
            utterance = self.finish_utterance()
            if utterance.text:
                return utterance
        return None

    def lm_histories(self) -> list[tuple]:
        """Word histories whose LM entry the next step may need (hypotheses in mid-word can
        complete their word) and that are not computed yet: what a batched LM pass can prefetch."""
        if self.scorer is None:
            return []
        cache = self.scorer.cache
        return list(dict.fromkeys(hyp.history for hyp in self.beam
                                  if hyp.text and hyp.text[-1] != " " and hyp.history not in cache))

    def candidates(self, row: list[float]) -> list[int]:
        if self.greedy:
            best = max(range(len(row)), key=row.__getitem__)
            return [] if best == BLANK else [best]
        floor = max(row) - self.config.token_prune
        return [t for t in range(1, len(row)) if row[t] >= floor]

    def decode_step(self, row: list[float]) -> None:
        """One CTC step. Next hypotheses are first gathered as bare probabilities per text
        ([p_blank, p_nonblank, parent, token, token log-prob, score bound], token 0 for the parent's
        own text); `select` then builds only those that can make the beam. An extension that cannot
        reach `beam_floor` (nor merge with another hypothesis) is not even gathered."""
        candidates, blank = self.candidates(row), row[BLANK]
        if not candidates:
            self.blank_step(blank)
            return
        following, allowed, children = {}, set(candidates), self.beam_children()
        floor = self.beam_floor(row, allowed)
        ranked = sorted(candidates, key=row.__getitem__, reverse=True)
        ranked_costs = [-row[t] for t in ranked]
        letter_reach, space_reach, greedy = self.letter_reach, self.space_reach, self.greedy
        for hyp in self.beam:
            total, text = hyp.acoustic, hyp.text
            same = following.get(text)
            if same is None:
                same = following[text] = [NEG_INF if greedy else total + blank, NEG_INF, hyp, 0, 0.0, 0.0]
            elif not greedy:
                same[0] = log_add(same[0], total + blank)
            last = TOKEN_ID[text[-1]] if text else None
            pending = self.pending_bound(hyp)
            letter_bound, space_bound = letter_reach + pending, space_reach + pending
            need_letter = floor - hyp.bonus - letter_bound
            need_space = floor - hyp.bonus - space_bound
            kids = children.get(text, ())
            # Tokens less likely than `reach` cannot lift this hypothesis to the floor; only those that
            # merge into its own text or into another hypothesis's still need looking at (in token order).
            reach = min(need_letter, need_space) - total - ROUNDING_SLACK
            likely = bisect.bisect_right(ranked_costs, -reach)
            if likely < len(ranked):
                tokens = sorted({*ranked[:likely], SPACE, last, *kids} & allowed)
            else:
                tokens = candidates
            for token in tokens:
                token_log_prob = row[token]
                if token == SPACE and (last is None or last == SPACE):
                    same[1] = log_add(same[1], total + token_log_prob)
                    continue
                if token == last:
                    same[1] = log_add(same[1], hyp.p_nonblank + token_log_prob)
                    log_prob = hyp.p_blank + token_log_prob
                else:
                    log_prob = total + token_log_prob
                if token == SPACE:
                    if log_prob < need_space and token not in kids:
                        continue
                    bound = space_bound
                else:
                    if log_prob < need_letter and token not in kids:
                        continue
                    bound = letter_bound
                if log_prob == NEG_INF:
                    continue
                next_text = text + ALPHABET[token - 1]
                entry = following.get(next_text)
                if entry is None:
                    following[next_text] = [NEG_INF, log_prob, hyp, token, token_log_prob, hyp.bonus + bound]
                else:
                    entry[1] = log_add(entry[1], log_prob)
        self.beam = self.select(following)

    def blank_step(self, blank: float) -> None:
        """A step on which no character is tried: every hypothesis keeps its text (texts in the
        beam are distinct), and the beam is re-sorted as `select` would sort it."""
        for hyp in self.beam:
            hyp.set_probs(hyp.acoustic + blank, NEG_INF)
        self.beam.sort(key=lambda hyp: -hyp.score)

    def beam_children(self) -> dict[str, set[int]]:
        """For each text, the tokens that extend it into another hypothesis of the beam."""
        children: dict[str, set[int]] = {}
        for hyp in self.beam:
            if hyp.text:
                children.setdefault(hyp.text[:-1], set()).add(TOKEN_ID[hyp.text[-1]])
        return children

    def beam_floor(self, row: list[float], allowed: set[int]) -> float:
        """A score that the beam's worst next hypothesis surely reaches: every hypothesis's text
        survives with at least its own blank path, and the bonus of whichever hypothesis makes that
        text first (itself, or an earlier one that reaches it by one more character)."""
        if self.greedy or len(self.beam) < self.beam_size:
            return NEG_INF
        blank, earlier, sure = row[BLANK], {}, []
        for hyp in self.beam:
            maker = hyp
            parent = earlier.get(hyp.text[:-1]) if hyp.text else None
            token = TOKEN_ID[hyp.text[-1]] if hyp.text else None
            if parent is not None and token in allowed:
                repeat = parent.text and parent.text[-1] == hyp.text[-1]
                if (parent.p_blank if repeat else parent.acoustic) + row[token] != NEG_INF:
                    maker = self.extended(parent, token, row[token])
            sure.append(hyp.acoustic + blank + maker.bonus + maker.bias_pending)
            earlier.setdefault(hyp.text, hyp)
        return min(sure)  # the beam is full: its beam_size-th best

    def select(self, following: dict) -> list[Hypothesis]:
        """The `beam_size` best next hypotheses, exactly as sorting all of them by score would pick
        them (ties keep their order). Extensions are built and LM-scored best bound first, and only
        while their score bound could still beat the beam's worst: on blank-dominated steps few are."""
        # Scores are kept negated, so that plain tuple order is best first, ties in gathering order.
        scored, bounded = [], []  # scored: (-score, index, built hypothesis or None, entry)
        for index, entry in enumerate(following.values()):
            p_blank, p_nonblank, parent, token, _, bonus_bound = entry
            acoustic = p_nonblank if p_blank == NEG_INF else log_add(p_blank, p_nonblank)
            if token == 0:
                scored.append((-(acoustic + parent.bonus + parent.bias_pending), index, None, entry))
            else:
                bounded.append((-(acoustic + bonus_bound), index, entry))
        worst = heapq.nlargest(self.beam_size, [-item[0] for item in scored])
        heapq.heapify(worst)
        bounded.sort()
        for negated_bound, index, entry in bounded:
            if len(worst) == self.beam_size and worst[0] > -negated_bound:
                break
            p_blank, p_nonblank, parent, token, token_log_prob, _ = entry
            hyp = self.extended(parent, token, token_log_prob)
            hyp.set_probs(p_blank, p_nonblank)
            score = hyp.score
            scored.append((-score, index, hyp, entry))
            if len(worst) < self.beam_size:
                heapq.heappush(worst, score)
            elif score > worst[0]:
                heapq.heapreplace(worst, score)
        scored.sort()
        return [hyp or self.kept(entry) for _, _, hyp, entry in scored[: self.beam_size]]

    @staticmethod
    def kept(entry: list) -> Hypothesis:
        """A hypothesis that keeps its text this step, with its new probabilities. Updated in
        place: the old beam is dropped after this step, and every extension is built by now."""
        hyp = entry[2]
        hyp.set_probs(entry[0], entry[1])
        return hyp

    def pending_bound(self, parent: Hypothesis) -> float:
        """The most that the pending phrase bonus can be after one more character."""
        if self.has_phrases:
            return max(0.0, parent.bias_pending + self.trie.bonus, self.trie.bonus)
        return parent.bias_pending

    def extended(self, hyp: Hypothesis, token: int, token_log_prob: float) -> Hypothesis:
        """`hyp` with one more character: word bookkeeping, LM fusion, phrase bias."""
        ch = ALPHABET[token - 1]
        new = hyp.clone()
        new.text, new.last_step = hyp.text + ch, self.step
        new.p_blank = new.p_nonblank = new.acoustic = NEG_INF
        if token == SPACE:
            self.complete_word(new, hyp)
        else:
            if hyp.word_start < 0:
                new.word_start, new.word_log_prob = self.step, 0.0
            new.word_log_prob += token_log_prob
            if not self.known_prefix(new.current_word):
                new.bonus -= self.config.lm_weight * self.config.unk_penalty
        if self.has_phrases:
            at_word_start = not hyp.text or hyp.text[-1] == " "
            new.bias_node, new.bias_pending, earned = self.trie.advance(
                hyp.bias_node, hyp.bias_pending, ch, at_word_start)
            new.bonus += earned
        return new

    def complete_word(self, new: Hypothesis, hyp: Hypothesis) -> None:
        """Close the word `hyp` was spelling, scoring it with the LM."""
        word = hyp.current_word
        new.bonus += self.config.word_bonus + self.lm_bonus(hyp.history, word)
        confidence = math.exp(hyp.word_log_prob / max(len(word), 1))
        new.words = hyp.words + ((word, hyp.word_start, hyp.last_step + 1, confidence),)
        new.history = hyp.history + (word,)
        new.word_start = -1

    def known_prefix(self, partial_word: str) -> bool:
        """Could this still become a word the LM or the session's phrases know?
        Each character spelled past that point costs the unknown-word penalty,
        so the beam cannot dodge the LM by running words together."""
        if self.scorer is None or not partial_word:
            return True
        return partial_word in self.scorer.runner.vocabulary.prefixes or partial_word in self.trie.prefixes

    def lm_bonus(self, history: tuple, word: str) -> float:
        if self.scorer is None:
            return 0.0
        log_prob = self.scorer.log_prob(history, word)
        known = word in self.scorer.runner.vocabulary or word in self.trie.words
        if not known and self.known_prefix(word):  # a prefix of known words but none itself
            log_prob -= self.config.unk_penalty
        return self.config.lm_weight * log_prob

    def at_endpoint(self) -> bool:
        best = self.best
        length = self.step - self.utterance_start
        if not best.text:  # (a text never starts with a space)
            return length * self.step_s * 1000 >= self.endpoint.leading_silence_ms
        silence_ms = (self.step - 1 - best.last_step) * self.step_s * 1000
        return (silence_ms >= self.endpoint.trailing_silence_ms
                or length * self.step_s >= self.endpoint.max_utterance_s)

    def finish_utterance(self) -> Utterance:
        """Close the pending word of every hypothesis, pick the best, start anew."""
        closed = []
        for hyp in self.beam:
            final = replace(hyp, bias_pending=0.0)
            if hyp.text and hyp.text[-1] != " ":
                self.complete_word(final, hyp)
            closed.append(final)
        best = max(closed, key=lambda h: h.score)
        utterance = self.to_utterance(best)
        self.reset([w.word for w in utterance.words])
        return utterance

    def to_utterance(self, hyp: Hypothesis) -> Utterance:
        words = [Word(w, round(start * self.step_s, 3), round(end * self.step_s, 3), round(conf, 3))
                 for w, start, end, conf in hyp.words]
        return Utterance(" ".join(w.word for w in words), words,
                         round(self.utterance_start * self.step_s, 3), round(self.step * self.step_s, 3))

    def partial_text(self) -> str:
        return self.best.text.strip()
