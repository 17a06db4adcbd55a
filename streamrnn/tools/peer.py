"""PocketSphinx as a peer recognizer: the same 16 kHz audio, in the same chunks, through
its streaming API, with its bundled US English acoustic model, language model and dictionary."""
from __future__ import annotations

import time

import numpy as np

from streamrnn.audio import SAMPLE_RATE, chunks
from streamrnn.tokens import normalize
from streamrnn_client.protocol import StreamrnnError


class PeerError(StreamrnnError, RuntimeError):
    """A peer recognizer that cannot be used here."""


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


class PocketSphinx:
    """One PocketSphinx decoder. Every utterance starts from the same cepstral mean, so a
    result does not depend on what was decoded before (as with a fresh streamrnn session)."""

    name = "pocketsphinx"

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise PeerError(f"the pocketsphinx peer needs the pocketsphinx package ({err})") from err
        self.decoder = Decoder(loglevel="ERROR")
        self.initial_cmn = self.decoder.get_cmn(False)

    def transcribe(self, samples: np.ndarray, chunk_ms: int | None = 100) -> tuple[str, float]:
        """Float32 16 kHz mono samples fed in chunks of `chunk_ms` (when None: all at once,
        normalised with the utterance's own cepstral mean); the text, upper-case and
        normalised like streamrnn's, and the seconds spent decoding."""
        pcm = as_pcm16(samples)
        started = time.perf_counter()
        self.decoder.set_cmn(self.initial_cmn)
        self.decoder.start_utt()
        for chunk in chunks(pcm, SAMPLE_RATE, chunk_ms):
            self.decoder.process_raw(chunk.tobytes(), False, chunk_ms is None)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        seconds = time.perf_counter() - started
        return normalize(hypothesis.hypstr if hypothesis else ""), seconds


PEERS = {"pocketsphinx": PocketSphinx}
