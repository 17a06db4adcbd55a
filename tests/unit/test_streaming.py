"""Invariant 1: streaming equals offline, for any chunking, LSTM and GRU, with and without lookahead."""
import pytest
import torch
from support import speech_sample, tiny_config

from streamrnn.acoustic import AcousticStream
from streamrnn.audio import Frontend
from streamrnn.checkpoint import load_model
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.engine.transcribe import final_text


def chunks(samples, sizes):
    start, index = 0, 0
    while start < len(samples):
        size = sizes[index % len(sizes)]
        yield samples[start:start + size]
        start, index = start + size, index + 1


def streamed_log_probs(model, samples, sizes):
    frontend, stream = Frontend(16000), AcousticStream(model)
    parts = [stream(frontend(c)) for c in chunks(samples, sizes)]
    parts.append(stream(frontend.flush(), final=True))
    return torch.cat(parts)


def offline_log_probs(model, samples):
    frontend = Frontend(16000)
    features = torch.cat([frontend(samples), frontend.flush()])
    with torch.inference_mode():
        return model(features[None])[0][0]


CHUNKINGS = {"10ms": [160], "1s": [16000], "100ms": [1600], "ragged": [7, 3000, 161, 16000, 1, 999, 4410]}


@pytest.mark.parametrize("rnn", ["lstm", "gru", "lookahead"])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_log_probs_do_not_depend_on_chunking(tiny_models, noise, rnn, chunking):
    model = load_model("acoustic", tiny_models[rnn])
    expected = offline_log_probs(model, noise)
    got = streamed_log_probs(model, noise, CHUNKINGS[chunking])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_lookahead_sees_exactly_its_future_steps(tiny_models, noise):
    model = load_model("acoustic", tiny_models["lookahead"])  # 2 steps of 3 frames
    frontend = Frontend(16000)
    features = torch.cat([frontend(noise), frontend.flush()])
    with torch.inference_mode():
        before = model(features[None])[0][0]
        changed = features.clone()
        changed[60:63] += 1.0  # step 20
        after = model(changed[None])[0][0]
    differs = [step for step in range(len(before)) if not torch.equal(before[step], after[step])]
    assert differs[0] == 18  # steps 18 and 19 see step 20 two and one steps ahead
    assert torch.equal(before[:18], after[:18])


def test_lookahead_stream_holds_back_its_last_steps(tiny_models, noise):
    model = load_model("acoustic", tiny_models["lookahead"])
    stream = AcousticStream(model)
    assert len(stream(torch.zeros(30, 80))) == 8  # 10 steps, 2 wait for their future
    assert len(stream(torch.zeros(3, 80))) == 1
    assert len(stream(torch.zeros(0, 80), final=True)) == 2


def session_text(recognizer, samples, sizes):
    session = recognizer.session(SessionOptions(sample_rate=16000, encoding="f32le", suggestions=0))
    events = []
    for chunk in chunks(samples, sizes):
        events += session.feed(chunk.astype("<f4").tobytes())
    return events + session.finish()


@pytest.mark.parametrize("rnn", ["lstm", "gru", "lookahead"])
def test_final_text_does_not_depend_on_chunking_tiny(tiny_models, noise, rnn):
    recognizer = Recognizer(tiny_config(tiny_models, rnn))
    texts = {name: final_text(session_text(recognizer, noise, sizes)) for name, sizes in CHUNKINGS.items()}
    assert len(set(texts.values())) == 1, texts
    whole = final_text(session_text(recognizer, noise, [len(noise)]))
    assert set(texts.values()) == {whole}


def test_real_speech_streaming_equals_offline(default_recognizer):
    from streamrnn.audio import read_audio
    path, _ = speech_sample(index=3)
    samples, rate = read_audio(path)
    model = default_recognizer.acoustic
    expected = offline_log_probs(model, samples)
    for sizes in CHUNKINGS.values():
        torch.testing.assert_close(streamed_log_probs(model, samples, sizes), expected, atol=1e-4, rtol=0)
    texts = {final_text(session_text(default_recognizer, samples, sizes)) for sizes in CHUNKINGS.values()}
    whole = final_text(session_text(default_recognizer, samples, [len(samples)]))
    assert texts == {whole} and whole
