"""The streaming recognition engine: models loaded once, sessions that carry
their state from chunk to chunk and answer with events.

Events are plain dicts, ready for JSON:
  {"type": "partial", "text", "start", "end"}
  {"type": "final", "text", "start", "end", "words": [{"word", "start", "end", "conf"}]}
  {"type": "suggestions", "words": [{"word", "p"}]}
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .acoustic import AcousticStream, run_streams
from .audio import Frontend, check_encoding, check_rate, decode_pcm, log_mel
from .checkpoint import load_model
from .config import Config, ModelConfig, model_path
from .decoding import Decoder, Utterance
from .invariance import lay_out_for_batch_invariance
from .lm import LMRunner, WordScorer, prefetch
from .tokens import normalize

MAX_PHRASES = 1000
MAX_SUGGESTIONS = 20


@dataclass
class SessionOptions:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    interim_results: bool = True
    suggestions: int | None = None
    phrases: list[str] = field(default_factory=list)

    def validate(self) -> "SessionOptions":
        check_rate(self.sample_rate)
        check_encoding(self.encoding)
        if self.suggestions is not None and not 0 <= self.suggestions <= MAX_SUGGESTIONS:
            raise ValueError(f"suggestions must be between 0 and {MAX_SUGGESTIONS}, got {self.suggestions}")
        if not isinstance(self.phrases, list) or not all(isinstance(p, str) for p in self.phrases):
            raise ValueError("phrases must be a list of strings")
        if len(self.phrases) > MAX_PHRASES:
            raise ValueError(f"at most {MAX_PHRASES} phrases, got {len(self.phrases)}")
        return self

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * (2 if self.encoding == "pcm_s16le" else 4)


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
            if getattr(self.acoustic.config, "targets", "chars") != "chars":
                raise ValueError(f"{config.model.acoustic_model} emits {self.acoustic.config.targets}: the decoder "
                                 "reads character models only (phone models need the lexicon search)")
        self.lm = None
        if config.model.language_model:
            self.lm = load_language_model(config, batch_invariant)
            self.lm_start = self.lm.start()  # every session's first LM entry: computed once, shared

    def session(self, options: SessionOptions | None = None) -> "Session":
        return Session(self, (options or SessionOptions()).validate())

    def run(self, jobs: list[tuple["Session", object]]) -> list[list[dict] | Exception]:
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
        log_probs = run_streams(self.acoustic, [session.acoustic for _, session, _, _ in live], list(features))
        rows = [lp.tolist() for lp in log_probs]
        events = [[] for _ in live]
        for step in range(max(map(len, rows), default=0)):
            for k, (_, session, _, _) in enumerate(live):
                if step < len(rows[k]):
                    events[k] += session.decode_row(rows[k][step])
            self.prefetch_lm([session for _, session, _, _ in live])
        for k, (index, session, _, final) in enumerate(live):
            results[index] = events[k] + session.end_chunk(final, bool(rows[k]))
        return results

    def prefetch_lm(self, sessions: list["Session"]) -> None:
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
        factory = recognizer.scorer if recognizer.lm else None
        self.decoder = Decoder(config.decoder, config.endpoint, recognizer.acoustic.frame_shift_s,
                               factory, options.phrases)
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
