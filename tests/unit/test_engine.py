"""The engine API: sessions, events, suggestions, and clear errors for bad input."""
import numpy as np
import pytest
from support import speech_sample, tiny_config

from streamrnn.audio import AudioError
from streamrnn.checkpoint import ModelError, load_model
from streamrnn.config import Config
from streamrnn.engine.recognizer import Recognizer, SessionOptions
from streamrnn.engine.transcribe import final_text, stream_file


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return Recognizer(tiny_config(tiny_models))


def test_session_events_have_the_documented_shape(tiny, noise):
    session = tiny.session(SessionOptions(encoding="f32le", suggestions=2))
    events = session.feed(noise.astype("<f4").tobytes()) + session.finish()
    kinds = [e["type"] for e in events]
    assert set(kinds) <= {"partial", "final", "suggestions"}
    for event in events:
        if event["type"] == "final":
            assert set(event) == {"type", "text", "start", "end", "words"}
            assert all(set(w) == {"word", "start", "end", "conf"} for w in event["words"])
        if event["type"] == "suggestions":
            assert 0 < len(event["words"]) <= 2


@pytest.mark.parametrize("options, message", [
    (dict(sample_rate=12345), "unsupported sample rate"),
    (dict(encoding="opus"), "unsupported encoding"),
    (dict(suggestions=99), "suggestions must be between"),
    (dict(phrases="not a list"), "phrases must be a list"),
])
def test_bad_session_options_are_named(tiny, options, message):
    with pytest.raises(ValueError, match=message):
        tiny.session(SessionOptions(**options))


def test_bad_audio_leaves_the_session_usable(tiny, noise):
    session = tiny.session(SessionOptions(encoding="pcm_s16le"))
    with pytest.raises(AudioError, match="even number of bytes"):
        session.feed(b"\x01\x02\x03")
    pcm = (noise * 32767).astype("<i2").tobytes()
    clean = tiny.session(SessionOptions(encoding="pcm_s16le"))
    assert final_text(session.feed(pcm) + session.finish()) == final_text(clean.feed(pcm) + clean.finish())


def test_empty_audio_gives_no_final(tiny):
    session = tiny.session()
    assert session.feed(b"") == []
    assert session.finish() == []


def test_empty_file_is_named(tiny, tmp_path):
    import soundfile
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no audio"):
        list(stream_file(tiny, path))


def test_missing_model_file_is_named(tmp_path):
    config = Config()
    config.model.acoustic_model = str(tmp_path / "nowhere.pt")
    with pytest.raises(ModelError, match="acoustic model file not found: .*nowhere.pt"):
        Recognizer(config)


def test_corrupt_model_file_is_named(tmp_path):
    bad = tmp_path / "am.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match="corrupt or unreadable"):
        load_model("acoustic", bad)


def test_wrong_kind_of_model_file_is_named(tiny_models):
    with pytest.raises(ModelError, match="not a streamrnn language model"):
        load_model("language", tiny_models["lstm"])


def test_suggest_and_score(tiny):
    suggestions = tiny.suggest("the cat", 3)
    assert len(suggestions) == 3 and all(0 < s["p"] < 1 for s in suggestions)
    result = tiny.score("the cat sat")
    assert result["log_prob"] < 0 and result["perplexity"] > 1
    with pytest.raises(ValueError, match="no words"):
        tiny.score("!!!")


def test_closed_session_refuses_audio(tiny):
    session = tiny.session()
    session.finish()
    with pytest.raises(ValueError, match="closed"):
        session.feed(b"\x00\x00")


def test_default_model_transcribes_real_speech(default_recognizer):
    """A guard against shipping a broken model: an untrained one scores a CER near 100%.
    (The interim default model's words are still mostly wrong: see BENCHMARKS.md.)"""
    from streamrnn.wer import edit_distance
    path, reference = speech_sample("librispeech-mini", index=5)
    text = final_text(stream_file(default_recognizer, path, chunk_ms=160))
    assert edit_distance(reference, text) / len(reference) < 0.6, (reference, text)


def test_default_model_suggests_after_a_final(default_recognizer):
    path, _ = speech_sample("librispeech-mini", index=5)
    events = list(stream_file(default_recognizer, path, suggestions=3))
    finals = [i for i, e in enumerate(events) if e["type"] == "final"]
    assert finals and events[finals[0] + 1]["type"] == "suggestions"


def quiet_after_a_final(recognizer):
    from streamrnn.audio import read_audio
    samples, rate = read_audio(speech_sample("librispeech-mini", index=5)[0])
    samples = np.concatenate([samples, np.zeros(rate * 2, dtype=np.float32)])
    session = recognizer.session(SessionOptions(sample_rate=rate, suggestions=3))
    events = [e for start in range(0, len(samples), rate // 10)
              for e in session.feed_samples(samples[start:start + rate // 10])]
    assert [e["type"] for e in events if e["type"] != "partial"][-2:] == ["final", "suggestions"]
    assert sum(part.nbytes for part in session.acoustic.state) == 9216
    assert len(events[-1]["words"]) == 3  # the suggestions came from the state alone
    return session


def test_the_letter_beam_search_refuses_the_shipped_phone_model():
    config = Config()
    config.decoder.method = "beam"
    with pytest.raises(ValueError, match="emits phones: decoder.method 'beam' reads character models only"):
        Recognizer(config)


def test_a_session_quiet_after_a_final_keeps_little_state_in_the_lexicon_search(default_recognizer):
    session = quiet_after_a_final(default_recognizer)
    assert sum(part.nbytes for part in session.decoder.lm_state) == 4096
    assert not any(isinstance(value, np.ndarray) and value.nbytes > 4096 for value in vars(session.decoder).values()
                   if value is not session.decoder.rows)


def test_long_pause_in_real_speech_gives_two_finals(default_recognizer):
    from streamrnn.audio import read_audio
    first, _ = speech_sample("speechocean762", index=0)
    second, _ = speech_sample("speechocean762", index=1)
    a, rate = read_audio(first)
    b, _ = read_audio(second)
    pause = np.zeros(rate * 2, dtype=np.float32)
    session = default_recognizer.session(SessionOptions(sample_rate=rate, encoding="f32le", suggestions=0))
    events = []
    for start in range(0, len(a) + len(pause) + len(b), rate // 10):
        chunk = np.concatenate([a, pause, b])[start:start + rate // 10]
        events += session.feed(chunk.astype("<f4").tobytes())
    events += session.finish()
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 2, finals
    assert finals[0]["end"] <= finals[1]["start"]
    duration = (len(a) + len(pause) + len(b)) / rate
    times = [t for f in finals for w in f["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= duration


def test_int8_quantized_models_transcribe_real_speech_close_to_float(default_recognizer):
    from torch.ao.nn.quantized import dynamic

    from streamrnn.wer import edit_distance
    config = Config()
    config.model.device, config.model.quantize = "cpu", "int8"
    quantized = Recognizer(config)
    assert isinstance(quantized.acoustic.rnn, dynamic.LSTM) and isinstance(quantized.acoustic.output, dynamic.Linear)
    assert isinstance(quantized.lm.model.rnn, dynamic.LSTM) and isinstance(quantized.lm.model.decoder, dynamic.Linear)
    path, reference = speech_sample("librispeech-mini", index=5)
    text = final_text(stream_file(quantized, path, chunk_ms=160))
    float_text = final_text(stream_file(default_recognizer, path, chunk_ms=160))
    assert text != "" and edit_distance(float_text, text) / len(float_text) < 0.2, (float_text, text)
    assert edit_distance(reference, text) / len(reference) < 0.6, (reference, text)
    assert quantized.suggest("THE", 2) and len(quantized.suggest("THE", 2)) == 2


def test_int8_quantization_is_refused_off_the_cpu(tiny_models):
    config = tiny_config(tiny_models)
    config.model.device, config.model.quantize = "cuda", "int8"
    with pytest.raises(ValueError, match='quantize = "int8" runs on the CPU only'):
        Recognizer(config)
