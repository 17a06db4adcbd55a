"""The streaming recognition engine: models loaded once, sessions that carry
their state from chunk to chunk and answer with events.

Events are plain dicts, ready for JSON:
  {"type": "partial", "text", "start", "end"}
  {"type": "final", "text", "start", "end", "words": [{"word", "start", "end", "conf"}]}
  {"type": "suggestions", "words": [{"word", "p"}]}
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamrnn.acoustic import AcousticStream, run_streams
from streamrnn.audio import Frontend, decode_pcm, log_mel
from streamrnn.checkpoint import ModelError, load_model
from streamrnn.config import Config, DecoderConfig, ModelConfig, model_path
from streamrnn.decoding import Decoder, Utterance
from streamrnn.invariance import lay_out_for_batch_invariance
from streamrnn.lm import LMRunner, WordScorer, prefetch
from streamrnn.phones import PhoneInventory, load_lexicon
from streamrnn.targets import CharInventory
from streamrnn.tokens import normalize
from streamrnn.wordsearch import LetterSpeller, PhoneSpeller, WordDecoder, WordSearch
from streamrnn_client.protocol import MAX_SUGGESTIONS, SessionOptions

log = logging.getLogger("streamrnn.engine.recognizer")


def pick_device(config: ModelConfig) -> str:
    """model.device, with "auto" the GPU when there is one (and the CPU for quantized models)."""
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() and not config.quantize else "cpu"
    return config.device


class Recognizer:
    """The loaded models, shared by every session."""

    def __init__(self, config: Config, acoustic: bool = True, batch_invariant: bool = True):
        """`acoustic=False`: the language model only (suggest, score), for a daemon whose sessions
        run in engine worker processes. `batch_invariant=False`: torch's own weight layout and no
        row padding (see invariance.py), only to measure what batch invariance costs."""
        self.config = config
        if config.model.threads:
            torch.set_num_threads(config.model.threads)
        self.device = pick_device(config.model)
        if self.device == "cpu":
            # oneDNN's LSTM re-lays out the weights on every call (about 2 ms each): far more than
            # the engine's small per-chunk steps cost on torch's own kernels.
            torch.backends.mkldnn.enabled = False
        self.acoustic = None
        if acoustic:
            self.acoustic = load_engine_model("acoustic", model_path(config.model.acoustic_model, "am.pt"),
                                              config.model, batch_invariant)
            if self.acoustic.config.targets != "chars" and config.decoder.method != "lexicon":
                raise ValueError(f"{config.model.acoustic_model} emits {self.acoustic.config.targets}: "
                                 f"decoder.method {config.decoder.method!r} reads character models only")
        self.lm = None
        if config.model.language_model:
            self.lm = load_language_model(config, batch_invariant)
            self.lm_start = self.lm.start()  # every session's first LM entry: computed once, shared
        self.word_search = None
        if acoustic and config.decoder.method == "lexicon":
            self.word_search = load_word_search(config.decoder, self.acoustic.config.tokens)

    def session(self, options: SessionOptions | None = None) -> Session:
        return Session(self, (options or SessionOptions()).validate())

    def run(self, jobs: list[tuple[Session, object]]) -> list[list[dict] | Exception]:
        """Chunks of many sessions at once: (session, audio) with audio as PCM bytes in the session's
        encoding, float samples, or None for the end of its stream (at most one job per session).
        One log-mel pass, one acoustic-model batch, and decoders stepped side by side with one
        batched LM pass per step. Each session gets the events it would get alone, or its error."""
        results: list = [None] * len(jobs)
        live = []
        for index, (session, audio) in enumerate(jobs):
            try:
                live.append((index, session, session.frames(audio), audio is None))
            except ValueError as err:  # AudioError, or a closed session
                results[index] = err
        sizes = [len(frames) for _, _, frames, _ in live]
        features = log_mel(torch.cat([frames for _, _, frames, _ in live])).split(sizes) if live else []
        log_probs = run_streams(self.acoustic, [session.acoustic for _, session, _, _ in live], list(features),
                                [final for _, _, _, final in live])
        # the lexicon search reads float32 arrays; the Python beam search is faster on lists
        rows = [lp.numpy() if self.word_search else lp.tolist() for lp in log_probs]
        events = [[] for _ in live]
        for step in range(max(map(len, rows), default=0)):
            for k, (_, session, _, _) in enumerate(live):
                if step < len(rows[k]):
                    events[k] += session.decode_row(rows[k][step])
            self.prefetch_lm([session for _, session, _, _ in live])
        for k, (index, session, _, final) in enumerate(live):
            results[index] = events[k] + session.end_chunk(final, len(rows[k]) > 0)
        return results

    def log_probs(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """The acoustic model's log-probs of a whole recording, one row per step: what a session's
        decoder would be fed (the same whichever way the audio is chunked)."""
        session = self.session(SessionOptions(sample_rate=rate, suggestions=0))
        frames = torch.cat([session.frames(samples), session.frames(None)])
        [rows] = run_streams(self.acoustic, [session.acoustic], [log_mel(frames)], [True])
        return rows.numpy()

    def prefetch_lm(self, sessions: list[Session]) -> None:
        if self.lm is not None:
            prefetch(self.lm, [(s.decoder.scorer, h) for s in sessions for h in s.decoder.lm_histories()])

    def scorer(self, root=None) -> WordScorer:
        return WordScorer(self.lm, root or self.lm_start)

    def suggest(self, text: str, count: int | None = None) -> list[dict]:
        """Next words after `text` (the start of a sentence when empty)."""
        return text_suggestions(self.require_lm(), text, self.config.suggestions.count if count is None else count)

    def score(self, text: str) -> dict:
        return text_score(self.require_lm(), text)

    def require_lm(self) -> LMRunner:
        if self.lm is None:
            raise ValueError("no language model is loaded (model.language_model is empty)")
        return self.lm


def load_language_model(config: Config, batch_invariant: bool = True) -> LMRunner:
    path = model_path(config.model.language_model or "builtin", "lm.pt")
    return LMRunner(load_engine_model("language", path, config.model, batch_invariant))


def load_word_search(config: DecoderConfig, tokens: list[str] | None = None) -> WordSearch:
    """The vocabulary and n-gram of decoder.method = "lexicon" ("builtin": the ones shipped), spelled
    in the acoustic model's `tokens` (None: characters), loaded once per process for the same
    settings: they are read-only, and take seconds to load."""
    return cached_word_search(dataclasses.astuple(config), tuple(tokens) if tokens else None)


@functools.lru_cache(maxsize=2)
def cached_word_search(settings: tuple, tokens: tuple | None) -> WordSearch:
    config = DecoderConfig(*settings)
    paths = model_path(config.ngram, "words.arpa.gz"), model_path(config.vocabulary, "words.txt")
    for path in paths:
        if not Path(path).is_file():
            raise ModelError(f"no such file: {path}")
    try:
        search = WordSearch(config, *paths, speller=word_speller(config, tokens))
    except RuntimeError as err:  # KenLM's own error names the file and what is wrong in it
        raise ModelError(f"cannot load the n-gram {paths[0]}: {str(err).splitlines()[-1]}") from err
    if search.unspellable:
        log.warning("%d of the %d vocabulary words have no pronunciation in %s and cannot be recognized "
                    "(`streamrnn train lexicon` writes one for them all), e.g. %s", len(search.unspellable),
                    len(search.words), config.pronunciations, " ".join(search.unspellable[:5]))
    return search


def word_speller(config: DecoderConfig, tokens: tuple | None) -> LetterSpeller | PhoneSpeller:
    """How the search spells words in the acoustic model's tokens: letters, or pronunciations."""
    if tokens is None or tuple(tokens) == CharInventory.tokens:
        return LetterSpeller()
    inventory = PhoneInventory.from_tokens(tokens)
    if config.pronunciations == "builtin":
        # the shipped vocabulary's pronunciations (CMUdict's, else the G2P model's), and CMUdict
        # (load_lexicon's default) for the words of phrases outside that vocabulary
        shipped = Path(model_path("builtin", "words.dict"))
        if not shipped.is_file():
            return PhoneSpeller(inventory, load_lexicon())
        return PhoneSpeller(inventory, load_lexicon(str(shipped)), phrase_lexicon=load_lexicon)
    if not Path(config.pronunciations).is_file():
        raise ModelError(f"no such file: {config.pronunciations}")
    return PhoneSpeller(inventory, load_lexicon(config.pronunciations))


def load_engine_model(kind: str, path: str, config: ModelConfig, batch_invariant: bool = True) -> nn.Module:
    """A model on the configured device; in float32 on the CPU laid out for batch invariance; with
    model.quantize = "int8", its recurrent and linear layers dynamically quantized (torch's
    eager-mode quantization: CPU only)."""
    device = pick_device(config)
    if config.quantize and device != "cpu":
        raise ValueError(f'model.quantize = "{config.quantize}" runs on the CPU only, but the models would be '
                         f'on {device}: set model.device = "cpu"')
    model = load_model(kind, path, device)
    if not config.quantize:
        return lay_out_for_batch_invariance(model) if device == "cpu" and batch_invariant else model
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao, which has no LSTM
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)


def text_suggestions(lm: LMRunner, text: str, count: int) -> list[dict]:
    if not isinstance(count, int) or not 0 < count <= MAX_SUGGESTIONS:
        raise ValueError(f"count must be a whole number from 1 to {MAX_SUGGESTIONS}, got {count!r}")
    state, log_probs = lm.start()
    words = normalize(text).split()
    if words:
        state, log_probs = lm.advance(state, words)
    return suggestion_list(lm, log_probs, count)


def text_score(lm: LMRunner, text: str) -> dict:
    words = normalize(text).split()
    if not words:
        raise ValueError("nothing to score: the text has no words")
    log_prob, perplexity = lm.score(words)
    return {"text": " ".join(words), "log_prob": log_prob, "perplexity": perplexity}


def suggestion_list(lm: LMRunner, log_probs, count: int) -> list[dict]:
    return [{"word": w, "p": round(p, 4)} for w, p in lm.suggest(log_probs, count)]


class Session:
    """One audio stream: frontend leftovers, AM state and decoder beam carried across chunks."""

    def __init__(self, recognizer: Recognizer, options: SessionOptions):
        self.recognizer = recognizer
        self.options = options
        config = recognizer.config
        self.suggestion_count = config.suggestions.count if options.suggestions is None else options.suggestions
        self.frontend = Frontend(options.sample_rate)
        self.acoustic = AcousticStream(recognizer.acoustic)
        step_s = recognizer.acoustic.frame_shift_s
        if recognizer.word_search is not None:
            self.decoder = WordDecoder(recognizer.word_search, config.endpoint, step_s, options.phrases,
                                       recognizer.lm, recognizer.lm_start if recognizer.lm else None)
        else:
            factory = recognizer.scorer if recognizer.lm else None
            self.decoder = Decoder(config.decoder, config.endpoint, step_s, factory, options.phrases)
        self.finals = 0
        self.closed = False

    @property
    def bytes_per_second(self) -> int:
        return self.options.bytes_per_second

    def feed(self, data: bytes) -> list[dict]:
        """Raw PCM bytes in the session's encoding."""
        return self.run_alone(data)

    def feed_samples(self, samples: np.ndarray) -> list[dict]:
        return self.run_alone(samples)

    def finish(self) -> list[dict]:
        """End of audio: decode what is left and return the last final."""
        return [] if self.closed else self.run_alone(None)

    def run_alone(self, audio) -> list[dict]:
        [result] = self.recognizer.run([(self, audio)])
        if isinstance(result, Exception):
            raise result
        return result

    def frames(self, audio) -> torch.Tensor:
        """The chunk's sample frames (bytes, samples, or None at the end of the stream)."""
        if self.closed:
            raise ValueError("session is closed")
        if audio is None:
            return self.frontend.flush_frames()
        if isinstance(audio, bytes):
            audio = decode_pcm(audio, self.options.encoding)
        return self.frontend.frames(audio)

    def decode_row(self, row: list[float]) -> list[dict]:
        utterance = self.decoder.advance_row(row)
        return self.final_events(utterance) if utterance else []

    def end_chunk(self, final: bool, stepped: bool) -> list[dict]:
        """After a chunk's steps: the last final at the end of the stream, else the partial."""
        if final:
            self.closed = True
            utterance = self.decoder.finish_utterance()
            return self.final_events(utterance) if utterance.text else []
        return self.partial_event() if stepped and self.options.interim_results else []

    def partial_event(self) -> list[dict]:
        text = self.decoder.partial_text()
        if not text:
            return []
        decoder = self.decoder
        return [{"type": "partial", "text": text, "start": round(decoder.utterance_start * decoder.step_s, 3),
                 "end": round(decoder.step * decoder.step_s, 3)}]

    def final_events(self, utterance: Utterance) -> list[dict]:
        self.finals += 1
        events = [{"type": "final", "text": utterance.text, "start": utterance.start, "end": utterance.end,
                   "words": [asdict(w) for w in utterance.words]}]
        log_probs = self.decoder.next_word_log_probs()
        if self.suggestion_count and log_probs is not None:
            words = suggestion_list(self.recognizer.lm, log_probs, self.suggestion_count)
            events.append({"type": "suggestions", "words": words})
        return events
