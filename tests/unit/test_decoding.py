"""The decoder on hand-made CTC posteriors: endpointing, biasing, timings."""
import math

import numpy as np
import torch
from support import speech_sample, tiny_config

from streamrnn.audio import read_audio
from streamrnn.config import DecoderConfig, EndpointConfig
from streamrnn.decoding import NEG_INF, Decoder, log_add
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.tokens import ALPHABET, BLANK, SPACE, VOCAB_SIZE

STEP_S = 0.04


def posteriors(spec: str, sure: float = 0.9) -> torch.Tensor:
    """One row per character of `spec`; '_' is blank; '(AE)' splits a step 55/45 between A and E."""
    rows, i = [], 0
    while i < len(spec):
        row = torch.full((VOCAB_SIZE,), (1 - sure) / (VOCAB_SIZE - 1))
        if spec[i] == "(":
            first, second = spec[i + 1], spec[i + 2]
            row[:] = 0.0001
            row[ALPHABET.index(first) + 1], row[ALPHABET.index(second) + 1] = 0.55, 0.45
            i += 4
        else:
            row[BLANK if spec[i] == "_" else ALPHABET.index(spec[i]) + 1] = sure
            i += 1
        rows.append((row / row.sum()).log())
    return torch.stack(rows)


def decode(spec, method="beam", phrases=(), silence_ms=400):
    decoder = Decoder(DecoderConfig(method=method), EndpointConfig(trailing_silence_ms=silence_ms), STEP_S,
                      None, list(phrases))
    finals = decoder.advance(posteriors(spec))
    last = decoder.finish_utterance()
    return finals + ([last] if last.text else [])


def test_greedy_and_beam_read_the_same_clear_posteriors():
    spec = "_HH_E_LL_L_OO__ _W_O_R_L_D__"
    for method in ("greedy", "beam"):
        assert [u.text for u in decode(spec, method)] == ["HELLO WORLD"]


def test_long_pause_splits_two_finals():
    spec = "_H_I__" + "_" * 20 + "_Y_O_U__"
    assert [u.text for u in decode(spec)] == ["HI", "YOU"]


def test_short_pause_keeps_one_final():
    spec = "_H_I_ " + "_" * 5 + "_Y_O_U__"
    assert [u.text for u in decode(spec)] == ["HI YOU"]


def test_max_utterance_length_forces_a_final():
    decoder = Decoder(DecoderConfig(), EndpointConfig(max_utterance_s=0.4), STEP_S)
    finals = decoder.advance(posteriors("_A_B_C_D_E_F_G_H_I_J_K_"))
    assert len(finals) >= 2


def test_phrase_biasing_changes_the_decision():
    spec = "_C_(AE)_T__"
    assert [u.text for u in decode(spec)] == ["CAT"]
    assert [u.text for u in decode(spec, phrases=["CET"])] == ["CET"]


def test_biasing_drops_bonus_of_broken_match():
    spec = "_C_(AE)_T__"
    assert [u.text for u in decode(spec, phrases=["CEXYZ"])] == ["CAT"]


def test_word_times_are_monotonic_and_inside_the_audio():
    spec = "__T_H_E_ _C_A_T_ __S_A_T___"
    [utterance] = decode(spec, silence_ms=10_000)
    assert [w.word for w in utterance.words] == ["THE", "CAT", "SAT"]
    edges = [t for w in utterance.words for t in (w.start, w.end)]
    assert edges == sorted(edges)
    assert 0 <= edges[0] and edges[-1] <= len(spec) * STEP_S + 1e-9
    assert all(w.end > w.start for w in utterance.words)
    assert all(0 < w.conf <= 1 for w in utterance.words)
    assert math.isclose(utterance.words[0].start, 2 * STEP_S)


def exhaustive_step(decoder: Decoder, row: list[float]) -> None:
    """The prefix beam search with no pruning: every next hypothesis built and scored, the best
    `beam_size` kept (a stable sort: ties keep their order). What the pruned search must equal."""
    candidates, following, blank = decoder.candidates(row), {}, row[BLANK]
    for hyp in decoder.beam:
        total = log_add(hyp.p_blank, hyp.p_nonblank)
        same = following.setdefault(hyp.text, [NEG_INF, NEG_INF, hyp, 0, 0.0])
        if not decoder.greedy or not candidates:
            same[0] = log_add(same[0], total + blank)
        last = ALPHABET.index(hyp.text[-1]) + 1 if hyp.text else None
        for token in candidates:
            if token == SPACE and last in (None, SPACE):
                same[1] = log_add(same[1], total + row[token])
                continue
            if token == last:
                same[1] = log_add(same[1], hyp.p_nonblank + row[token])
                log_prob = hyp.p_blank + row[token]
            else:
                log_prob = total + row[token]
            if log_prob != NEG_INF:
                entry = following.setdefault(hyp.text + ALPHABET[token - 1], [NEG_INF, NEG_INF, hyp, token, row[token]])
                entry[1] = log_add(entry[1], log_prob)
    built = []
    for p_blank, p_nonblank, parent, token, token_log_prob in following.values():
        hyp = decoder.extended(parent, token, token_log_prob) if token else parent.clone()
        hyp.set_probs(p_blank, p_nonblank)
        built.append(hyp)
    decoder.beam = sorted(built, key=lambda h: -h.score)[: decoder.beam_size]


def events_alone(recognizer, clips, options):
    results = []
    for samples, option in zip(clips, options):
        session = recognizer.session(SessionOptions(**option))
        results.append(session.feed_samples(samples) + session.finish())
    return results


def assert_pruned_equals_exhaustive(recognizer, clips, monkeypatch):
    options = [{}, {"phrases": ["THE WORLD", "KUBERNETES"]}, {"suggestions": 2}]
    options = [options[i % len(options)] for i in range(len(clips))]
    pruned = events_alone(recognizer, clips, options)
    monkeypatch.setattr(Decoder, "decode_step", exhaustive_step)
    assert events_alone(recognizer, clips, options) == pruned
    return pruned


def test_pruned_beam_search_equals_exhaustive_on_real_speech(default_recognizer, monkeypatch):
    clips = [read_audio(speech_sample("librispeech-mini", index)[0])[0][: 16000 * 6] for index in (3, 8, 12)]
    pruned = assert_pruned_equals_exhaustive(default_recognizer, clips, monkeypatch)
    assert all(any(e["type"] == "final" and e["text"] for e in events) for events in pruned)


def test_pruned_beam_search_equals_exhaustive_on_flat_posteriors(tiny_models, monkeypatch):
    """A random tiny model: flat posteriors, many candidates, near ties."""
    recognizer = Recognizer(tiny_config(tiny_models))
    rng = np.random.default_rng(3)
    clips = [(rng.standard_normal(16000 * 3) * 0.1).astype(np.float32) for _ in range(3)]
    assert_pruned_equals_exhaustive(recognizer, clips, monkeypatch)
