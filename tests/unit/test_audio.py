import numpy as np
import pytest
import torch
import torchaudio

from streamrnn.audio import AudioError, Frontend, StreamingResampler, check_rate, decode_pcm, read_audio


def ragged(samples, rng, low=1, high=4000):
    start = 0
    while start < len(samples):
        size = int(rng.integers(low, high))
        yield samples[start:start + size]
        start += size


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_resampler_equals_torchaudio(rate):
    rng = np.random.default_rng(rate)
    samples = rng.standard_normal(rate * 2).astype(np.float32)
    expected = torchaudio.functional.resample(torch.from_numpy(samples), rate, 16000).numpy()
    resampler = StreamingResampler(rate)
    got = np.concatenate([resampler(c) for c in ragged(samples, rng)] + [resampler.flush()])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_frontend_chunked_equals_whole(rate):
    rng = np.random.default_rng(1)
    samples = (rng.standard_normal(rate * 2) * 0.1).astype(np.float32)
    whole = Frontend(rate)
    expected = torch.cat([whole(samples), whole.flush()])
    chunked = Frontend(rate)
    got = torch.cat([chunked(c) for c in ragged(samples, rng)] + [chunked.flush()])
    assert got.shape == expected.shape == (198, 80)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_pcm_s16_decodes_to_unit_range():
    data = np.array([0, 16384, -32768], dtype="<i2").tobytes()
    np.testing.assert_allclose(decode_pcm(data, "pcm_s16le"), [0.0, 0.5, -1.0])


@pytest.mark.parametrize("data, encoding, message", [
    (b"\x00\x01\x02", "pcm_s16le", "even number of bytes"),
    (b"\x00" * 6, "f32le", "multiple of 4"),
    (np.array([0.1, np.nan], dtype="<f4").tobytes(), "f32le", "NaN or infinite"),
    (np.array([np.inf], dtype="<f4").tobytes(), "f32le", "NaN or infinite"),
    (b"\x00\x00", "mulaw", "unsupported encoding 'mulaw'"),
])
def test_bad_pcm_is_named(data, encoding, message):
    with pytest.raises(AudioError, match=message):
        decode_pcm(data, encoding)


def test_unsupported_rate_is_named():
    with pytest.raises(AudioError, match="unsupported sample rate 12345"):
        check_rate(12345)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot read audio file .*bad.wav"):
        read_audio(bad)


@pytest.mark.parametrize("suffix, options", [
    ("wav", {}), ("flac", {}), ("ogg", {"format": "OGG", "subtype": "VORBIS"}),
    ("opus", {"format": "OGG", "subtype": "OPUS"}), ("mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
])
def test_common_formats_read_as_mono(tmp_path, suffix, options):
    import soundfile
    rate = 48000
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32) * 0.5
    path = tmp_path / f"tone.{suffix}"
    soundfile.write(path, stereo, rate, **options)
    samples, got_rate = read_audio(path)
    assert got_rate == rate and samples.ndim == 1
    assert abs(len(samples) - rate) < rate * 0.1
    assert 0.3 < np.abs(samples).max() < 0.7  # lossy codecs overshoot a little
