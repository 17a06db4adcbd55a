"""The letter-to-phone model: the shipped one on CMUdict words it never saw, and `train g2p`."""
import subprocess
import sys

from streamrnn.checkpoint import load_model
from streamrnn.g2p import guess_pronunciation, load_g2p
from streamrnn.phones import PHONE_SET, cmudict_path, load_lexicon
from streamrnn.train.g2p import error_rates, splits


def test_the_shipped_model_pronounces_held_out_words():
    held_out = splits(load_lexicon())["test"][:400]
    wer, per = error_rates(load_g2p(), held_out)
    assert wer < 0.45 and per < 0.15, (wer, per)


def test_a_guess_is_phones_and_a_word_with_other_characters_gets_none():
    guess = guess_pronunciation("ZORBLEXING")
    assert guess and set(guess) <= PHONE_SET and guess[0] == "Z" and guess[-1] == "NG"
    assert guess_pronunciation("R2D2") is None


def test_train_g2p_writes_a_model_and_resumes(tmp_path):
    small = tmp_path / "small.dict"
    small.write_text("".join(cmudict_path().read_text().splitlines(keepends=True)[40000:40600]))
    command = [sys.executable, "-m", "streamrnn", "train", "g2p", "--dictionary", str(small), "--hidden", "32",
               "--encoder-layers", "1", "--out", str(tmp_path / "run"), "--epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "g2p epoch 0 train_loss" in result.stdout and "g2p test (" in result.stdout
    assert load_model("g2p", tmp_path / "run" / "g2p.pt").config.hidden == 32
    resumed = subprocess.run(command[:-1] + ["2", "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "resumed at epoch 1" in resumed.stdout and "g2p epoch 1" in resumed.stdout
    (tmp_path / "empty.dict").write_text("")
    empty = subprocess.run(command[:6] + [str(tmp_path / "empty.dict"), "--out", str(tmp_path / "run2")],
                           capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0 and "too few words to train" in empty.stderr.strip().splitlines()[-1]
