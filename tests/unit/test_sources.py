"""Training sources: manifests with weights, and LibriSpeech folders read by torchaudio's class."""
import json
from collections import Counter

import pytest
import soundfile
from support import SPEECH, needs_shared_data

from streamrnn.manifest import Utterance
from streamrnn.train.sources import Source, epoch_order, load_source, split_weight


def make_librispeech(root, subset="train-clean-100", count=4):
    """A LibriSpeech-layout folder (flac + trans.txt) from a few shared-data utterances."""
    needs_shared_data()
    records = [json.loads(line) for line in (SPEECH / "librispeech-mini.jsonl").read_text().splitlines()]
    records = sorted((r for r in records if r["duration"] < 8), key=lambda r: r["audio"])[:count]
    for record in records:
        utterance_id = record["audio"].rsplit("/", 1)[1].split(".")[0]
        speaker, chapter, _ = utterance_id.split("-")
        folder = root / "LibriSpeech" / subset / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        samples, rate = soundfile.read(SPEECH / record["audio"])
        soundfile.write(folder / f"{utterance_id}.flac", samples, rate)
        with open(folder / f"{speaker}-{chapter}.trans.txt", "a") as transcripts:
            transcripts.write(f"{utterance_id} {record['text']}\n")
    return records


def test_librispeech_source_reads_the_layout(tmp_path):
    records = make_librispeech(tmp_path)
    source = load_source(f"librispeech:{tmp_path}:train-clean-100:1.5")
    assert source.name == "librispeech-train-clean-100" and source.weight == 1.5
    assert [u.text for u in source.train + source.dev] == [r["text"] for r in records]
    assert all(u.audio.is_file() and u.audio.suffix == ".flac" for u in source.train + source.dev)


def test_librispeech_dev_subsets_are_dev_data(tmp_path):
    make_librispeech(tmp_path, "dev-clean", count=2)
    source = load_source(f"librispeech:{tmp_path}:dev-clean")
    assert source.train == [] and len(source.dev) == 2


@pytest.mark.parametrize("spec, message", [
    ("librispeech:{tmp}:train-clean-360", "Dataset not found"),
    ("librispeech:{tmp}:train-everything", "Invalid url"),
    ("librispeech:train-clean-100", "write a LibriSpeech source as"),
    ("{tmp}/none.jsonl:2", "no such manifest"),
    ("{tmp}/a.jsonl:0", "weight must be positive"),
    ("{tmp}/a.jsonl:-1", "weight must be positive"),
])
def test_bad_sources_are_named(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        load_source(spec.format(tmp=tmp_path))


def test_manifest_source_with_weight(tmp_path):
    needs_shared_data()
    source = load_source(f"{SPEECH / 'fsdd.jsonl'}:2")
    assert (source.name, source.weight) == ("fsdd", 2.0) and source.train and source.dev
    assert split_weight("/data/speech.jsonl") == ("/data/speech.jsonl", 1.0)
    assert split_weight("synth/manifest.jsonl:0.25") == ("synth/manifest.jsonl", 0.25)


def fake_source(count, weight):
    return Source("s", [Utterance(None, "A", 1.0, "x", "train")] * count, [], weight)


def test_weights_oversample_whole_and_fractional():
    sources = [fake_source(10, 2.0), fake_source(8, 0.5), fake_source(4, 1.25)]
    order = epoch_order(sources, seed=0, epoch=0)
    counts = Counter(order)
    assert all(counts[i] == 2 for i in range(10))
    assert sum(counts[i] for i in range(10, 18)) == 4 and max(counts[i] for i in range(10, 18)) == 1
    assert sum(counts[i] for i in range(18, 22)) == 5
    # the fractional part is a different sample each epoch, the same for the same epoch
    assert epoch_order(sources, 0, 0) == order
    assert any(epoch_order(sources, 0, epoch) != order for epoch in range(1, 5))


def test_integer_weights_keep_the_plain_order():
    """A run resumed from before weights were fractional sees the same batches."""
    assert epoch_order([fake_source(3, 1.0), fake_source(2, 2.0)], 0, 7) == [0, 1, 2, 3, 4, 3, 4]
