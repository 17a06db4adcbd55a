"""`streamrnn train lm` end to end: checkpoints, resume, early stopping, a model the engine loads."""
import json
import subprocess
import sys

from streamrnn.checkpoint import load_model

SENTENCES = ["the cat sat on the mat.", "a dog sat on the log.", "the cat saw the dog.",
             "a cat and a dog sat on a mat."]


def train_lm(tmp_path, *extra):
    (tmp_path / "train.txt").write_text(" ".join(SENTENCES * 40))
    (tmp_path / "dev.txt").write_text(" ".join(SENTENCES[::-1] * 5))
    command = [sys.executable, "-m", "streamrnn", "train", "lm", "--train", str(tmp_path / "train.txt"),
               "--dev", str(tmp_path / "dev.txt"), "--out", str(tmp_path / "lm"), "--dim", "16", "--layers", "1",
               "--batch", "4", "--bptt", "8", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_train_lm_learns_and_resumes(tmp_path):
    first = train_lm(tmp_path, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    history = json.loads((tmp_path / "lm" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0]
    assert (tmp_path / "lm" / "learning_curve.png").stat().st_size > 0

    resumed = train_lm(tmp_path, "--epochs", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch 1" in resumed.stdout
    history = json.loads((tmp_path / "lm" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[-1]["dev_perplexity"] < history[0]["dev_perplexity"]

    model = load_model("language", tmp_path / "lm" / "lm.pt", "cpu")
    assert {"CAT", "DOG", "MAT"} <= set(model.vocabulary.words)


def test_train_lm_stops_mid_epoch_and_resumes_there(tmp_path):
    stopped = train_lm(tmp_path, "--epochs", "1", "--max-minutes", "0.0001")
    assert stopped.returncode == 0, stopped.stderr
    assert "time budget reached" in stopped.stdout
    assert not (tmp_path / "lm" / "history.json").exists()
    resumed = train_lm(tmp_path, "--epochs", "1", "--resume")
    assert "resumed at epoch 0 step 1" in resumed.stdout
    assert json.loads((tmp_path / "lm" / "history.json").read_text())[0]["epoch"] == 0


def test_train_lm_leaves_blocked_text_out(tmp_path):
    from streamrnn.train.ngram import digest
    (tmp_path / "blocklist.txt").write_text(digest("A DOG SAT ON THE LOG".split()).hex() + "\n")
    result = train_lm(tmp_path, "--epochs", "1", "--blocklist", str(tmp_path / "blocklist.txt"))
    assert result.returncode == 0, result.stderr
    assert "dropped 0 documents whole (0 sentences) and 40 sentences of the others" in result.stdout
    words = set(load_model("language", tmp_path / "lm" / "lm.pt", "cpu").vocabulary.words)
    assert "CAT" in words and "LOG" not in words
