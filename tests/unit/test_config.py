from pathlib import Path

import pytest

from streamrnn.config import Config, ConfigError, as_dict, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_config_toml_documents_every_default():
    assert as_dict(load_config(ROOT / "config.toml")) == as_dict(Config())


def test_relative_model_paths_resolve_from_the_config_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[model]\nacoustic_model = "models/am.pt"\nlanguage_model = ""\n')
    config = load_config(path)
    assert config.model.acoustic_model == str(tmp_path / "models" / "am.pt")
    assert config.model.language_model == ""


@pytest.mark.parametrize("text, message", [
    ("[nosuch]\nx = 1\n", "unknown section"),
    ("[decoder]\nbeam = 3\n", "unknown key decoder.beam"),
    ("[decoder]\nbeam_size = 'big'\n", "decoder.beam_size must be int"),
    ("[decoder\n", "cannot read config"),
    ("[decoder]\nword_beam_tokens = 0\n", "decoder.word_beam_tokens must be at least 1"),
    ("[decoder]\nword_beam_threshold = 0.0\n", "decoder.word_beam_threshold must be positive"),
    ("[decoder]\nmethod = 'fancy'\n", "decoder.method must be"),
    ("[server]\nhttp_port = 70000\n", "server.http_port must be"),
    ("[training]\nnoise_probability = 2.0\n", "noise_probability must be 0..1"),
    ("[training]\nnoise_snr_db = [20, 5]\n", "noise_snr_db must be \\[low, high\\]"),
    ("[training]\naugmented_copies = 0\n", "training.augmented_copies must be at least 1"),
    ("[synth]\nvoices = ['festival']\n", "synth.voices must be some of"),
    ("[auth]\napi_key_sha256 = ['my-password']\n", "auth.api_key_sha256 entries must be 64 hex digits"),
    ("[tls]\ncert = 'cert.pem'\n", "tls.cert and tls.key must be set together"),
    ("[limits]\nidle_timeout_s = -1\n", "limits.idle_timeout_s must be 0"),
    ("[limits]\nmax_upload_bytes = 10\n", "limits.max_upload_bytes must be at least 1024"),
    ("[wyoming]\nport = 70000\n", "wyoming.port must be"),
    (f"[wyoming]\nenabled = true\n[auth]\napi_key_sha256 = ['{'a' * 64}']\n", "allow_without_key"),
    ("[cluster]\nredis_url = '127.0.0.1:6379'\n", "cluster.redis_url must be"),
    ("[cluster]\nredis_url = 'redis://r:6379/0'\n[resume]\nwindow_s = 0.0\n", "cluster.redis_url needs resume.window_s"),
])
def test_bad_config_is_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
