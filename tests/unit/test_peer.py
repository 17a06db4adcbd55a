"""PocketSphinx, the peer recognizer, on real speech."""
import pytest
from support import speech_sample

from streamrnn.audio import load_16k
from streamrnn.wer import ErrorRate

pytest.importorskip("pocketsphinx")


def word_error_rate(reference, hypothesis):
    errors = ErrorRate()
    errors.add(reference, hypothesis)
    return errors.wer


def test_transcribes_read_speech_streaming_and_offline_independently_of_earlier_audio():
    from streamrnn.tools.peer import PocketSphinx
    peer = PocketSphinx()
    path, reference = speech_sample("librispeech-mini", 23)  # CLOSED THE DOOR CAREFULLY AND ...
    samples = load_16k(path)
    streamed, seconds = peer.transcribe(samples, 100)
    assert word_error_rate(reference, streamed) < 0.5, streamed
    assert streamed == streamed.upper() and seconds > 0
    offline, _ = peer.transcribe(samples, None)
    assert word_error_rate(reference, offline) < 0.5, offline
    peer.transcribe(load_16k(speech_sample("fsdd", 0)[0]), 100)
    assert peer.transcribe(samples, 100)[0] == streamed
