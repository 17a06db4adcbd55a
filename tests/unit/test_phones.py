"""Phone targets: CMUdict lines to a lexicon, transcripts to phone ids, the model's inventory."""
import subprocess
import sys

import pytest

from streamrnn.acoustic import AcousticConfig
from streamrnn.phones import BOUNDARY, PHONES, PhoneInventory, load_lexicon, parse_entry, possessive, read_lexicon
from streamrnn.targets import CharInventory, PhoneTargets, greedy_ids, make_inventory
from streamrnn.tokens import BLANK

DICT = """\
'bout B AW1 T
a AH0
a(2) EY1
a.m. EY2 EH1 M
bout B AW1 T
cat K AE1 T
dog D AO1 G
hello HH AH0 L OW1
hello(2) HH EH0 L OW1
horse HH AO1 R S
world W ER1 L D
""".splitlines()


def lexicon():
    return read_lexicon(DICT)


def test_entries_lose_variant_numbers_and_stress():
    assert parse_entry("hello(2) HH EH0 L OW1") == ("hello", ("HH", "EH", "L", "OW"))
    assert parse_entry("") is None and parse_entry("x QQ") is None


def test_lexicon_keeps_alternates_first_one_first_and_skips_multiword_entries():
    lex = lexicon()
    assert lex["HELLO"] == [("HH", "AH", "L", "OW"), ("HH", "EH", "L", "OW")]
    assert lex["A"] == [("AH",), ("EY",)]
    assert lex["BOUT"] == [("B", "AW", "T")]  # 'bout only normalises to BOUT: same phones, stored once
    assert "A M" not in lex and "AM" not in lex


def test_inventory_is_blank_boundary_and_39_phones():
    inventory = PhoneInventory(lexicon=lexicon())
    assert len(PHONES) == len(set(PHONES)) == 39
    assert inventory.tokens[BLANK] == "<blank>" and inventory.tokens[1] == BOUNDARY
    assert len(inventory.tokens) == 41
    assert len(PhoneInventory(boundary=False, lexicon=lexicon()).tokens) == 40


def test_transcript_to_phone_ids_and_back():
    inventory = PhoneInventory(lexicon=lexicon())
    ids = inventory.encode("Hello, world!")
    assert inventory.decode(ids) == "HH AH L OW | W ER L D"
    assert inventory.phone_ids(ids) == [i for i in ids if i != inventory.ids[BOUNDARY]]
    plain = PhoneInventory(boundary=False, lexicon=lexicon())
    assert plain.decode(plain.encode("hello world")) == "HH AH L OW W ER L D"


def test_words_without_pronunciation_fail_the_transcript_unless_guessed():
    inventory = PhoneInventory(lexicon=lexicon())
    assert inventory.encode("hello zyzzyva") is None
    assert inventory.missing("hello zyzzyva") == ["ZYZZYVA"]


def test_possessives_follow_the_last_phone():
    inventory = PhoneInventory(lexicon=lexicon())
    assert inventory.decode(inventory.encode("cat's dog's horse's")) == "K AE T S | D AO G Z | HH AO R S IH Z"
    assert possessive(("K", "AE", "T")) == ("K", "AE", "T", "S")


def test_phone_error_rate_ignores_boundaries():
    targets = PhoneTargets(lexicon=lexicon())
    reference = targets.encode("cat dog")
    hypothesis = [i for i in reference if i != targets.ids[BOUNDARY]]
    assert targets.error_rate([(reference, hypothesis)]) == 0.0
    assert targets.error_rate([(reference, hypothesis[:-1])]) == pytest.approx(1 / 6)


def test_greedy_ids_merge_repeats_and_drop_blanks():
    import torch
    steps = torch.tensor([2, 2, 0, 2, 5, 0, 0]).tolist()
    log_probs = torch.nn.functional.one_hot(torch.tensor(steps), 8).float()
    assert greedy_ids(log_probs) == [2, 2, 5]


def test_model_config_carries_its_inventory():
    chars = CharInventory()
    assert AcousticConfig().vocab == len(chars.tokens)
    phones = make_inventory("phones")
    config = AcousticConfig(vocab=len(phones.tokens), targets="phones", tokens=list(phones.tokens))
    assert PhoneTargets.from_tokens(config.tokens).tokens == phones.tokens
    with pytest.raises(ValueError):
        AcousticConfig(vocab=5, targets="phones", tokens=list(phones.tokens))


def test_bundled_cmudict_loads():
    pytest.importorskip("pocketsphinx")
    inventory = PhoneInventory()
    assert inventory.decode(inventory.encode("the cat")) == "DH AH | K AE T"
    assert len(inventory.lexicon) > 100_000


def test_train_lexicon_writes_every_vocabulary_word_it_can_pronounce(tmp_path):
    (tmp_path / "words.txt").write_text("HELLO\nDOG\nZORBLEX\n")
    (tmp_path / "cmu.dict").write_text("\n".join(DICT) + "\n")
    out = tmp_path / "lexicon.dict"
    result = subprocess.run([sys.executable, "-m", "streamrnn", "train", "lexicon", "--vocabulary",
                             str(tmp_path / "words.txt"), "--dictionary", str(tmp_path / "cmu.dict"),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 words guessed by the G2P model, 0 left out" in result.stdout
    written = load_lexicon(str(out))
    assert written["HELLO"] == [("HH", "AH", "L", "OW"), ("HH", "EH", "L", "OW")]
    assert written["DOG"] == [("D", "AO", "G")]
    assert written["ZORBLEX"][0][0] == "Z"  # the G2P model's guess
