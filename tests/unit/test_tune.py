"""`streamrnn tune`: each setting decodes as the product would, and bad values are refused."""
import json

from support import needs_shared_data
from test_cli import streamrnn
from test_eval import subset_manifest

from streamrnn.config import DecoderConfig


def test_tune_scores_each_setting_as_eval_would(tmp_path):
    needs_shared_data()
    manifest = str(subset_manifest(tmp_path, "librispeech-mini", 4))
    default = DecoderConfig()
    result = streamrnn("tune", manifest, "--ngram-weight", f"0.5,{default.ngram_weight}", "--json")
    assert result.returncode == 0, result.stderr
    tuned = json.loads(result.stdout)
    assert tuned["utterances"] == {"even": 2, "odd": 2}
    assert [(r["ngram_weight"], r["word_score"]) for r in tuned["results"]] == [
        (0.5, default.word_score), (default.ngram_weight, default.word_score)]
    assert tuned["best"]["ngram_weight"] in (0.5, default.ngram_weight)
    evaluated = streamrnn("eval", manifest, "--split", "dev", "--json")  # with the default setting
    assert evaluated.returncode == 0, evaluated.stderr
    assert tuned["results"][1]["wer_all"] == json.loads(evaluated.stdout)[0]["offline"]["wer"]


def test_tune_refuses_bad_values_in_one_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    for flag, value, message in (("--ngram-weight", "-1", "decoder.ngram_weight must not be negative"),
                                 ("--word-score", "1,x", "invalid comma-separated float value: '1,x'"),
                                 ("--word-beam-size", "0", "decoder.word_beam_size must be at least 1")):
        result = streamrnn("tune", str(manifest), flag, value)
        assert result.returncode == 2
        assert message in result.stderr.strip().splitlines()[-1], result.stderr
