"""The decoder on hand-made CTC posteriors: endpointing, biasing, timings."""
import math

import torch

from streamrnn.config import DecoderConfig, EndpointConfig
from streamrnn.decoding import Decoder
from streamrnn.tokens import ALPHABET, BLANK, VOCAB_SIZE

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
