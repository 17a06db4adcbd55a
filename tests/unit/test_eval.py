"""`streamrnn eval` over several manifests with the pocketsphinx peer, and `streamrnn eval-lm`."""
import json

import pytest
from support import SPEECH, needs_shared_data
from test_cli import streamrnn, tiny_config_file  # noqa: F401 (fixture)

from streamrnn.tools.evaluate import spread
from streamrnn.wer import matched


def subset_manifest(tmp_path, name, lines):
    """A manifest of some dev lines of a shared manifest, with absolute audio paths."""
    records = [json.loads(line) for line in (SPEECH / f"{name}.jsonl").read_text().splitlines()]
    records = [r for r in records if r["split"] == "dev" or r["speaker"] == "theo"][:lines]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({**r, "audio": str(SPEECH / r["audio"]), "split": "dev"}) + "\n"
                            for r in records))
    return path


@pytest.fixture
def two_manifests(tmp_path):
    needs_shared_data()
    pytest.importorskip("pocketsphinx")
    return [subset_manifest(tmp_path, "librispeech-mini", 1), subset_manifest(tmp_path, "fsdd", 2)]


def test_eval_two_manifests_with_the_peer_as_json_and_hypotheses(two_manifests, tmp_path):
    hyps = tmp_path / "hyps.jsonl"
    result = streamrnn("eval", *map(str, two_manifests), "--split", "dev", "--peer", "pocketsphinx",
                       "--json", "--hyps", str(hyps))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["manifest"], r["system"]) for r in rows] == [
        ("librispeech-mini.jsonl", "streamrnn"), ("librispeech-mini.jsonl", "pocketsphinx"),
        ("fsdd.jsonl", "streamrnn"), ("fsdd.jsonl", "pocketsphinx")]
    for row in rows:
        assert row["utterances"] == (1 if row["manifest"].startswith("libri") else 2)
        for mode in ("streaming", "offline"):
            assert 0 <= row[mode]["wer"] and 0 <= row[mode]["cer"] and row[mode]["rtf"] > 0
        confidence = row["streaming"].get("confidence")  # streamrnn's words carry confidences, a peer's none
        assert confidence is None if row["system"] == "pocketsphinx" else all(
            v is None or 0 <= v <= 1 for v in (confidence or {}).values())
    # the engine's output does not depend on the chunking
    for row in rows[::2]:
        assert row["streaming"]["wer"] == row["offline"]["wer"]
    records = [json.loads(line) for line in hyps.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert set(record["hyps"]) == {"streamrnn", "pocketsphinx"}
        assert all(set(texts) == {"streaming", "offline"} for texts in record["hyps"].values())
    assert records[0]["ref"] == "NORTHANGER ABBEY"


def test_eval_prints_a_table_row_per_manifest_and_system(two_manifests):
    result = streamrnn("eval", *map(str, two_manifests), "--split", "dev", "--chunk-ms", "250")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "250 ms chunks" in lines[0]
    assert lines[1].startswith("| manifest ") and "WER streaming" in lines[1] and "WER offline" in lines[1]
    assert [[cell.strip() for cell in line.split("|")[1:3]] for line in lines[3:]] == [
        ["librispeech-mini.jsonl", "streamrnn"], ["fsdd.jsonl", "streamrnn"]]


def test_spread_keeps_first_and_last():
    assert spread(list(range(9)), 3) == [0, 4, 8]
    assert spread(list(range(4)), 0) == [0, 1, 2, 3]
    assert spread(list(range(4)), 9) == [0, 1, 2, 3]


TRAIN_TEXT = "The cat sat on a mat. The cat sat. A cat sat on the mat!\n\nHello world. Hello the world.\n" * 20
TEST_TEXT = "The cat sat on the mat. Hello world. A dog sat on a mat.\n"


def test_eval_lm_compares_the_lstm_with_kneser_ney(tiny_config_file, tmp_path):  # noqa: F811
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text(TRAIN_TEXT)
    test.write_text(TEST_TEXT)
    result = streamrnn("eval-lm", "--train", str(train), "--test", str(test), "--json", config=tiny_config_file)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # 3 sentences, 14 words and 3 boundaries; DOG is outside the tiny LM's vocabulary
    assert report["test_tokens"] == 17 and report["test_unk_rate"] == pytest.approx(1 / 17)
    assert report["accuracy_targets"] == 13 and report["vocabulary"] == 10
    lstm, ngram = report["models"]
    assert lstm["model"] == "LSTM" and ngram["model"] == "Kneser-Ney 3-gram"
    for model in (lstm, ngram):
        assert 1 < model["perplexity"] < 1000 and 0 <= model["top1"] <= model["top3"] <= 1
    # the n-gram has learnt this tiny text; the tiny LSTM is untrained
    assert ngram["perplexity"] < lstm["perplexity"] and ngram["top3"] > 0.5

    table = streamrnn("eval-lm", "--train", str(train), "--test", str(test), "--max-test-tokens", "5",
                      "--order", "2", config=tiny_config_file)
    assert table.returncode == 0, table.stderr
    assert "test tokens 5 " in table.stdout and "| Kneser-Ney 2-gram |" in table.stdout


def test_eval_lm_names_bad_input(tiny_config_file, tmp_path):  # noqa: F811
    empty = tmp_path / "empty.txt"
    empty.write_text("...\n")
    result = streamrnn("eval-lm", "--train", str(empty), "--test", str(empty), config=tiny_config_file)
    assert result.returncode == 2 and f"no sentences in {empty}" in result.stderr


def test_words_are_matched_to_the_reference_by_a_minimal_alignment():
    assert matched("A B C D".split(), "A X C D E".split()) == [True, False, True, True, False]
    assert matched(["THE", "CAT"], ["CAT"]) == [True]
    assert matched([], ["A"]) == [False]
